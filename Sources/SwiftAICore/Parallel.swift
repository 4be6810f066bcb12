import CDNNL
#if canImport(Glibc)
    import Glibc
#endif

/// Parallel loops on the OpenMP (libgomp) thread team that oneDNN uses.
///
/// One team for both: oneDNN's workers spin for a while after each primitive, and a second pool
/// (Dispatch) would fight them for the two cores.
public enum Parallel {
    /// Number of threads used by SwiftAI's loops and oneDNN. Defaults to all cores, or
    /// `SWIFTAI_NUM_THREADS` when set.
    public static var threadCount: Int {
        get { configured }
        set {
            configured = Swift.max(1, newValue)
            omp_set_num_threads(Int32(configured))
        }
    }

    nonisolated(unsafe) private static var configured: Int = {
        var n = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        if let s = getenv("SWIFTAI_NUM_THREADS"), let v = Int(String(cString: s)), v > 0 { n = v }
        omp_set_num_threads(Int32(Swift.max(1, n)))
        return Swift.max(1, n)
    }()

    /// Runs `body` with oneDNN seeing a team of one on this thread (primitives created inside are single-threaded).
    static func withOneThread<R>(_ body: () throws -> R) rethrows -> R {
        omp_set_num_threads(1)
        defer { omp_set_num_threads(Int32(threadCount)) }
        return try body()
    }

    /// When true (scoped with `Parallel.$isSerial.withValue(true) { … }`), loops on this thread run serially:
    /// data-loading threads use it so the cores stay with the model's thread.
    @TaskLocal public static var isSerial = false

    /// Splits `0..<count` into one contiguous chunk per thread and runs `body` on each, in parallel when
    /// `count` is at least `grain` per extra thread. Chunks never overlap.
    @inline(__always)
    public static func forEachChunk(_ count: Int, grain: Int = 32_768, _ body: (Range<Int>) -> Void) {
        let threads = Swift.min(threadCount, count / Swift.max(grain, 1))
        if threads <= 1 || omp_get_num_threads() > 1 || isSerial {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var job = Job(count: count, threads: threads, body: escapable)
            withUnsafeMutablePointer(to: &job) { ptr in
                GOMP_parallel(parallelTrampoline, UnsafeMutableRawPointer(ptr), UInt32(threads), 0)
            }
        }
    }

    struct Job {
        let count: Int
        let threads: Int
        let body: (Range<Int>) -> Void
    }
}

private func parallelTrampoline(_ raw: UnsafeMutableRawPointer?) {
    let job = raw!.assumingMemoryBound(to: Parallel.Job.self).pointee
    let t = Int(omp_get_thread_num()), n = Int(omp_get_num_threads())
    let per = (job.count + n - 1) / n
    let lo = Swift.min(job.count, t * per), hi = Swift.min(job.count, lo + per)
    if lo < hi { job.body(lo..<hi) }
}
