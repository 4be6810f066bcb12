import CDNNL
#if canImport(Glibc)
    import Glibc
#endif

/// Aligned, untyped memory shared by a tensor and its views.
///
/// Tensors are values: before writing in place, a tensor checks `isKnownUniquelyReferenced` on its
/// storage and copies it when shared.
public final class Storage {
    /// The first byte (64-byte aligned).
    public let data: UnsafeMutableRawPointer
    /// Capacity in bytes.
    public let byteCount: Int

    /// Uninitialised memory of `byteCount` bytes.
    public init(byteCount: Int) {
        self.byteCount = byteCount
        data = BlockCache.shared.allocate(byteCount)
    }

    /// Zero-filled memory of `byteCount` bytes.
    public convenience init(zeroedByteCount: Int) {
        self.init(byteCount: zeroedByteCount)
        memset(data, 0, zeroedByteCount)
    }

    deinit { BlockCache.shared.release(data, byteCount: byteCount) }
}

/// Keeps freed large blocks for reuse.
///
/// Activations of a training step are tens of megabytes each; glibc returns such blocks to the OS
/// on free, and every new step then pays a page fault per 4 KiB touched (~25 ms per 50 MB). Blocks of
/// at least `minimumBytes` are rounded to a size class and kept in a free list instead, so after the
/// first step a training loop runs with no page faults. Smaller blocks are kept too, up to `smallLimitBytes`: a
/// batch-1 inference allocates kilobytes per layer, and glibc's `posix_memalign` consolidates its small free chunks
/// for each such request, which costs about as much as a small layer's kernel. ``emptyCache()`` hands everything back.
public final class BlockCache: @unchecked Sendable {
    public static let shared = BlockCache()

    /// Blocks from this size up are rounded to a size class (8 per power of two), smaller ones to 64 bytes.
    public let minimumBytes = 1 << 18
    /// Cached bytes above this limit are freed instead of kept.
    public var limitBytes = 8 << 30
    /// Of which at most this many in blocks under `minimumBytes`.
    public var smallLimitBytes = 64 << 20

    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var cachedBytes = 0
    private var smallCachedBytes = 0
    private var live = 0
    private let mutex = Mutex()

    private init() {}

    /// Rounds to a size class: 8 classes per power of two.
    @inline(__always) func sizeClass(_ bytes: Int) -> Int {
        if bytes < minimumBytes { return (bytes + 63) & ~63 }
        let top = Int.bitWidth - 1 - bytes.leadingZeroBitCount
        let step = 1 << (top - 3)
        return (bytes + step - 1) / step * step
    }

    /// The current thread's allocation counter while ``countingThreadAllocations(_:)`` runs on it.
    private static let counterKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    @inline(__always) private func count(_ delta: Int) {
        if let c = pthread_getspecific(BlockCache.counterKey) { c.assumingMemoryBound(to: Int.self).pointee += delta }
    }

    /// Runs `body`, which can read the net bytes of tensor storage this thread has allocated since it started
    /// (allocations minus frees) — unlike ``liveBytes``, unaffected by other threads.
    public func countingThreadAllocations<R>(_ body: (_ netBytes: () -> Int) throws -> R) rethrows -> R {
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 0)
        let previous = pthread_getspecific(BlockCache.counterKey)
        pthread_setspecific(BlockCache.counterKey, counter)
        defer {
            pthread_setspecific(BlockCache.counterKey, previous)
            counter.deallocate()
        }
        return try body { counter.pointee }
    }

    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let size = sizeClass(Swift.max(bytes, 64))
        count(size)
        let reused: UnsafeMutableRawPointer? = mutex.withLock {
            live += size
            guard let p = free[size]?.popLast() else { return nil }
            cachedBytes -= size
            if size < minimumBytes { smallCachedBytes -= size }
            return p
        }
        if let reused { return reused }
        var raw: UnsafeMutableRawPointer? = nil
        let rc = posix_memalign(&raw, 64, size)
        guard rc == 0, let raw else { fatalError("SwiftAI: out of memory allocating \(size) bytes") }
        return raw
    }

    func release(_ p: UnsafeMutableRawPointer, byteCount: Int) {
        let size = sizeClass(Swift.max(byteCount, 64))
        count(-size)
        let kept: Bool = mutex.withLock {
            live -= size
            let small = size < minimumBytes
            guard cachedBytes + size <= limitBytes, !small || smallCachedBytes + size <= smallLimitBytes else {
                return false
            }
            free[size, default: []].append(p)
            cachedBytes += size
            if small { smallCachedBytes += size }
            return true
        }
        if !kept { Glibc.free(p) }
    }

    /// Bytes of tensor storage currently in use (allocated and not yet freed).
    public var liveBytes: Int { mutex.withLock { live } }

    /// Returns every cached block to the system (and asks glibc to unmap its free heap memory).
    public func emptyCache() {
        mutex.lock()
        let all = free.values.flatMap { $0 }
        free = [:]
        cachedBytes = 0
        smallCachedBytes = 0
        mutex.unlock()
        for p in all { Glibc.free(p) }
        malloc_trim(0)
    }
}
