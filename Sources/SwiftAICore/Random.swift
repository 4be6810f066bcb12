#if canImport(Glibc)
    import Glibc
#endif

/// A seedable random number generator (xoshiro256**, seeded through SplitMix64).
///
/// The same seed gives the same numbers on every machine: only integer arithmetic and IEEE
/// double operations are involved. Pass one explicitly (`generator:`) or use ``Generator/default``.
public final class Generator: RandomNumberGenerator {
    private var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    /// The seed this generator was last seeded with.
    public private(set) var seed: UInt64 = 0
    private var spareNormal: Double?
    private let mutex = Mutex()

    /// A generator seeded with `seed`.
    public init(seed: UInt64 = 0) { manualSeed(seed) }

    /// The process-wide default generator (seed 0 until ``manualSeed(_:)``).
    nonisolated(unsafe) public static let `default` = Generator(seed: 0)

    /// Runs `body` holding this generator's lock: bulk draws (tensor factories, permutations) use it so that
    /// threads sharing a generator never interleave inside one draw.
    public func withLock<R>(_ body: () throws -> R) rethrows -> R { try mutex.withLock(body) }

    /// Restarts the sequence from `seed`.
    public func manualSeed(_ seed: UInt64) {
        self.seed = seed
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
        spareNormal = nil
    }

    /// The full state, to save and later ``restore(_:)``.
    public var state: [UInt64] {
        [s.0, s.1, s.2, s.3, spareNormal.map { $0.bitPattern } ?? 0, spareNormal == nil ? 0 : 1, seed]
    }

    /// Restores a state from ``state``.
    public func restore(_ st: [UInt64]) {
        require(st.count == 7, "Generator.restore: expected 7 words, got \(st.count)")
        s = (st[0], st[1], st[2], st[3])
        spareNormal = st[5] == 1 ? Double(bitPattern: st[4]) : nil
        seed = st[6]
    }

    @inline(__always)
    public func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public func nextDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in [0, 1) with 24 random bits (exactly representable in `Float`).
    @inline(__always)
    public func nextFloat() -> Float { Float(next() >> 40) * 0x1.0p-24 }

    /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
    public func nextNormal() -> Double {
        if let v = spareNormal { spareNormal = nil; return v }
        var u1 = nextDouble()
        while u1 == 0 { u1 = nextDouble() }
        let u2 = nextDouble()
        let r = (-2 * Glibc.log(u1)).squareRoot()
        spareNormal = r * Glibc.sin(2 * Double.pi * u2)
        return r * Glibc.cos(2 * Double.pi * u2)
    }

    /// Uniform integer in `range` (unbiased).
    public func nextInt(in range: Range<Int>) -> Int {
        require(!range.isEmpty, "Generator.nextInt: empty range")
        let bound = UInt64(range.count)
        let threshold = (0 &- bound) % bound
        while true {
            let r = next()
            if r >= threshold { return range.lowerBound + Int(r % bound) }
        }
    }

    /// A random permutation of `0..<n` (Fisher–Yates).
    public func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        withLock {
            if n > 1 {
                for i in stride(from: n - 1, to: 0, by: -1) {
                    p.swapAt(i, nextInt(in: 0..<(i + 1)))
                }
            }
        }
        return p
    }
}

/// Seeds the default generator (PyTorch's `torch.manual_seed`).
public func manualSeed(_ seed: UInt64) { Generator.default.manualSeed(seed) }
