#if canImport(Glibc)
    import Glibc
#endif

// Fast paths chosen by measurement on the CPU at hand (issue #19), not by thresholds tuned on one machine: which
// of two implementations of one operation wins depends on the ISA (AVX2 vs AVX-512, bf16 or not), the core count and
// the shape. The first call of each shape times every candidate, alternately, and the fastest is kept for the process.

/// Remembers, per shape, which of several interchangeable implementations ran fastest here.
final class PathChoice<Key: Hashable>: RecordedChoices, @unchecked Sendable {
    private var chosen: [Key: Int] = [:]
    private let lock = Mutex()
    /// Timed rounds per candidate (after one untimed warm-up each); the minimum counts.
    let rounds: Int
    /// Names this choice among all of them (``PathChoices``).
    let name: String

    init(_ name: String, rounds: Int = 3) {
        self.name = name
        self.rounds = rounds
        PathChoices.register(self)
    }

    /// The index of the fastest of `count` candidates for `key`; on the first request each is timed through
    /// `run(i)` (they must compute the same result; their outputs are discarded) — unless ``PathChoices/reuse(_:)``
    /// handed in the choice a checkpointed run made.
    func choose(_ key: Key, count: Int, _ run: (Int) -> Void) -> Int {
        if let c = lock.withLock({ chosen[key] }) { return c }
        if let c = PathChoices.reused("\(name)|\(key)"), c < count {
            lock.withLock { chosen[key] = c }
            return c
        }
        // One trial at a time in the process: trials running side by side would time each other's load.
        return PathChoices.trialLock.withLock {
            if let c = lock.withLock({ chosen[key] }) { return c }
            let c = Self.fastest(count, rounds: rounds, run)
            lock.withLock { chosen[key] = c }
            return c
        }
    }

    func recorded() -> [String: Int] {
        lock.withLock { Dictionary(uniqueKeysWithValues: chosen.map { ("\(name)|\($0.key)", $0.value) }) }
    }

    /// The cached choice for `key`, if it was made.
    func choice(_ key: Key) -> Int? { lock.withLock { chosen[key] } }

    /// Times each candidate `rounds` times, alternately, after a warm-up round; the index of the smallest minimum.
    static func fastest(_ count: Int, rounds: Int, _ run: (Int) -> Void) -> Int {
        guard count > 1, !PathChoices.untimed else { return 0 }
        for i in 0..<count { run(i) }
        var best = [Double](repeating: .infinity, count: count)
        for _ in 0..<rounds {
            for i in 0..<count { best[i] = Swift.min(best[i], seconds { run(i) }) }
        }
        return best.indices.min { best[$0] < best[$1] }!
    }

    private static func seconds(_ body: () -> Void) -> Double {
        var a = timespec(), b = timespec()
        clock_gettime(CLOCK_MONOTONIC, &a)
        body()
        clock_gettime(CLOCK_MONOTONIC, &b)
        return Double(b.tv_sec - a.tv_sec) + Double(b.tv_nsec - a.tv_nsec) * 1e-9
    }
}

protocol RecordedChoices: AnyObject {
    func recorded() -> [String: Int]
}

/// The path choices this process made, so that a resumed run computes exactly as the run it continues: timing may
/// pick another path in a new process, and paths round differently. A checkpoint stores ``recorded()``; resuming
/// hands them to ``reuse(_:)`` before anything is timed.
public enum PathChoices {
    private nonisolated(unsafe) static var all: [RecordedChoices] = []
    private nonisolated(unsafe) static var reusable: [String: Int] = [:]
    private static let lock = Mutex()
    /// Held while a choice is timed.
    static let trialLock = Mutex()
    /// `SWIFTAI_PATH_CHOICE=first`: every choice takes its first candidate without timing (PyTorch's
    /// `cudnn.benchmark = False`), so separate runs compute alike whatever the machine's load (tests that compare
    /// runs).
    static let untimed = getenv("SWIFTAI_PATH_CHOICE").map { String(cString: $0) == "first" } ?? false

    static func register(_ c: RecordedChoices) { lock.withLock { all.append(c) } }

    static func reused(_ key: String) -> Int? { lock.withLock { reusable.isEmpty ? nil : reusable[key] } }

    /// Every choice made so far, by choice and key.
    public static func recorded() -> [String: Int] {
        lock.withLock { all }.reduce(into: [:]) { $0.merge($1.recorded()) { a, _ in a } }
    }

    /// Makes these choices (from ``recorded()``) for keys not yet chosen in this process.
    public static func reuse(_ choices: [String: Int]) { lock.withLock { reusable.merge(choices) { _, b in b } } }
}
