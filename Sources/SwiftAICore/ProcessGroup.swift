import CMPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How ``ProcessGroup/allReduce(_:_:)`` combines the ranks' values.
public enum ReduceOp: Int32, Sendable {
    case sum = 0, max = 1, min = 2
}

/// Problems of a distributed job that come from outside one process: the launcher, MPI, or other ranks.
public enum DistributedError: Error, CustomStringConvertible {
    /// ``ProcessGroup/mpi()`` in a process no MPI launcher started.
    case notLaunched
    /// A launcher said this is one of several processes, but MPI sees a world of one.
    case launcherMismatch(launcher: String, expected: Int)
    /// MPI itself failed (initialisation, thread support).
    case mpi(String)
    /// Ranks disagree about something that must be the same everywhere (data, model, version).
    case ranksDiffer(String)
    /// The global batch does not split into equal per-rank batches.
    case unevenBatch(batch: Int, size: Int)

    public var description: String {
        switch self {
        case .notLaunched:
            return "ProcessGroup.mpi(): this process was not started by mpirun (no OMPI_COMM_WORLD_SIZE, PMIX_RANK "
                + "or PMI_RANK in its environment); start it with `mpirun -np N …`, or use ProcessGroup.single"
        case let .launcherMismatch(launcher, expected):
            return "\(launcher) started this process as one of \(expected), but MPI sees a world of 1: this build "
                + "links Open MPI 4.1, so start it with Open MPI's mpirun (or Slurm's `srun --mpi=pmix`)"
        case let .mpi(s): return "MPI: \(s)"
        case let .ranksDiffer(s): return "the ranks differ: \(s)"
        case let .unevenBatch(batch, size):
            return "the batch size \(batch) does not split evenly over \(size) processes; use a multiple of \(size)"
        }
    }
}

/// The processes of one training job and the collectives between them (PyTorch's `ProcessGroup`, MLX's
/// `mx.distributed.Group`): ``single`` (one process, every collective a no-op) or ``mpi()`` (Open MPI).
///
/// Collectives are called by every rank in the same order. They act in place on dense float32, float64 or int64
/// tensors. An MPI failure (a peer that died, a broken link) ends the job through `MPI_Abort`, naming this rank
/// and the call, rather than leaving the other ranks waiting.
public final class ProcessGroup: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Rank and number of processes on this host.
    public let localRank: Int
    public let localSize: Int
    let usesMPI: Bool
    /// MPI calls are serialised (`MPI_THREAD_SERIALIZED`): data-loading threads never call MPI, but a caller may.
    private let lock = NSLock()
    private var finalized = false
    /// Running non-blocking all-reduces, which a progress thread tests every half millisecond: Open MPI advances a
    /// non-blocking collective only inside MPI calls, and the caller is busy computing meanwhile.
    private var outstanding: [AllReduceWork] = []
    private let progress = NSCondition()
    private var progressStarted = false

    init(rank: Int, size: Int, localRank: Int, localSize: Int, usesMPI: Bool) {
        (self.rank, self.size, self.localRank, self.localSize, self.usesMPI) = (
            rank, size, localRank, localSize, usesMPI
        )
    }

    /// One process: rank 0 of 1.
    public static let single = ProcessGroup(rank: 0, size: 1, localRank: 0, localSize: 1, usesMPI: false)

    /// The group of the training job running on this task (set by `Learner.distributed`): ops that work across
    /// processes (SyncBatchNorm) consult it; ``single`` outside one.
    @TaskLocal public static var current: ProcessGroup = .single

    /// Whether this is rank 0, the one that prints and writes files.
    public var isMain: Bool { rank == 0 }

    nonisolated(unsafe) private static var world: ProcessGroup?
    private static let worldLock = NSLock()

    /// The size an MPI launcher announced in the environment (Open MPI, PMIx, MPICH/Slurm PMI), if any.
    public static var launcherWorldSize: (launcher: String, size: Int)? {
        let env = ProcessInfo.processInfo.environment
        for (key, name) in [("OMPI_COMM_WORLD_SIZE", "mpirun"), ("PMIX_SIZE", "PMIx"), ("PMI_SIZE", "PMI")] {
            if let s = env[key], let n = Int(s) { return (name, n) }
        }
        if env["PMIX_RANK"] != nil { return ("PMIx", 0) }
        return nil
    }

    /// The MPI world this process belongs to. MPI is initialised once per process (`MPI_Init_thread`, asking for
    /// serialised calls from any thread); later calls return the same group. Each rank then runs cores ÷ local
    /// ranks threads, unless `SWIFTAI_NUM_THREADS` says otherwise.
    ///
    /// - Throws: ``DistributedError/notLaunched`` outside `mpirun`; ``DistributedError/launcherMismatch`` when a
    ///   launcher announced several processes but MPI sees one.
    public static func mpi() throws -> ProcessGroup {
        worldLock.lock()
        defer { worldLock.unlock() }
        if let world { return world }
        guard let launched = launcherWorldSize else { throw DistributedError.notLaunched }
        var provided: Int32 = 0
        if cmpi_initialized() == 0 {
            let rc = cmpi_init(1, &provided)
            guard rc == MPI_SUCCESS else { throw DistributedError.mpi("MPI_Init_thread failed: \(errorString(rc))") }
            guard provided >= cmpi_thread_serialized() else {
                throw DistributedError.mpi(
                    "MPI_Init_thread provided thread level \(provided), below MPI_THREAD_SERIALIZED; "
                        + "use an MPI built with thread support")
            }
        }
        var localRank: Int32 = 0, localSize: Int32 = 1
        let rc = cmpi_local(&localRank, &localSize)
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi("MPI_Comm_split_type failed: \(errorString(rc))") }
        let g = ProcessGroup(
            rank: Int(cmpi_rank()), size: Int(cmpi_size()), localRank: Int(localRank), localSize: Int(localSize),
            usesMPI: true)
        if g.size == 1 && launched.size > 1 {
            throw DistributedError.launcherMismatch(launcher: launched.launcher, expected: launched.size)
        }
        if getenv("SWIFTAI_NUM_THREADS") == nil {
            Parallel.threadCount = Swift.max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) / g.localSize)
        }
        world = g
        return g
    }

    /// The MPI world, once ``mpi()`` has set it up in this process.
    public static var active: ProcessGroup? { worldLock.withLock { world } }

    /// ``mpi()`` when an MPI launcher started this process, ``single`` otherwise.
    public static func fromEnvironment() throws -> ProcessGroup {
        launcherWorldSize == nil ? .single : try mpi()
    }

    /// Ends MPI at a normal exit (every rank calls it; no collective may follow).
    public func finalize() {
        guard usesMPI else { return }
        progress.withLock {
            outstanding = []
            progress.broadcast()
        }
        lock.withLock {
            guard !finalized else { return }
            finalized = true
            _ = cmpi_finalize()
        }
    }

    /// Ends the whole job: every rank of it stops (`MPI_Abort`). Print the reason first.
    public func abort(exitCode: Int32) -> Never {
        if usesMPI { cmpi_abort(exitCode) }
        exit(exitCode)
    }

    // MARK: Collectives

    /// Combines `t` over all ranks, in place (dense float32, float64 or int64).
    public func allReduce(_ t: inout Tensor, _ op: ReduceOp = .sum) {
        guard size > 1 else { return }
        let code = Self.typeCode(t, "allReduce")
        t.makeUnique()
        let base = t.storage.data + t.offset * t.dtype.byteSize
        forChunks(t.count, t.dtype.byteSize, base) { p, n in
            call("MPI_Allreduce") { cmpi_allreduce(p, n, code, op.rawValue) }
        }
    }

    /// Combines `values` over all ranks, in place.
    public func allReduce(_ values: inout [Double], _ op: ReduceOp = .sum) {
        guard size > 1, !values.isEmpty else { return }
        let n = Int32(values.count)
        values.withUnsafeMutableBytes { b in
            call("MPI_Allreduce") { cmpi_allreduce(b.baseAddress, n, 1, op.rawValue) }
        }
    }

    /// Combines `values` over all ranks, in place.
    public func allReduce(_ values: inout [Int], _ op: ReduceOp = .sum) {
        guard size > 1, !values.isEmpty else { return }
        let n = Int32(values.count)
        values.withUnsafeMutableBytes { b in
            call("MPI_Allreduce") { cmpi_allreduce(b.baseAddress, n, 2, op.rawValue) }
        }
    }

    /// Whether `flag` holds on any rank (one all-reduced flag: the decision every rank then takes together).
    public func any(_ flag: Bool) -> Bool {
        var v = [flag ? 1 : 0]
        allReduce(&v, .max)
        return v[0] != 0
    }

    /// Starts combining `t` over all ranks and returns at once; `t`'s storage holds the result after
    /// ``AllReduceWork/wait()``, and must not be read or written before.
    public func startAllReduce(_ t: Tensor, _ op: ReduceOp = .sum) -> AllReduceWork {
        let code = Self.typeCode(t, "startAllReduce")
        require(t.count <= Int(Int32.max), "startAllReduce: \(t.count) elements exceed one MPI message")
        let work = AllReduceWork(group: self, tensor: t)
        guard size > 1 else {
            work.done = true
            return work
        }
        let base = t.storage.data + t.offset * t.dtype.byteSize
        call("MPI_Iallreduce") { cmpi_iallreduce(base, Int32(t.count), code, op.rawValue, &work.request) }
        progress.withLock {
            outstanding.append(work)
            if !progressStarted {
                progressStarted = true
                Thread { [unowned self] in self.driveProgress() }.start()
            }
            progress.signal()
        }
        return work
    }

    /// The progress thread: tests the running all-reduces until they complete, sleeping between rounds.
    private func driveProgress() {
        while true {
            let works: [AllReduceWork] = progress.withLock {
                while outstanding.isEmpty { progress.wait() }
                return outstanding
            }
            let finished = works.filter(\.isComplete)
            progress.withLock { outstanding.removeAll { w in finished.contains { $0 === w } } }
            usleep(500)
        }
    }

    /// Copies rank `root`'s `t` into every rank's `t` (same shape and dtype everywhere).
    public func broadcast(_ t: inout Tensor, root: Int = 0) {
        guard size > 1 else { return }
        t.makeUnique()
        let base = t.storage.data + t.offset * t.dtype.byteSize
        let bytes = t.count * t.dtype.byteSize
        require(t.isDense, "broadcast: the tensor must be dense, got strides \(t.strides) for shape \(t.shape)")
        forChunks(bytes, 1, base) { p, n in call("MPI_Bcast") { cmpi_bcast(p, n, 3, Int32(root)) } }
    }

    /// Rank `root`'s bytes, on every rank.
    public func broadcast(_ data: Data, root: Int = 0) -> Data {
        guard size > 1 else { return data }
        var length = [data.count]
        call("MPI_Bcast") { cmpi_bcast(&length, 1, 2, Int32(root)) }
        var bytes = [UInt8](rank == root ? data : Data(count: length[0]))
        bytes.withUnsafeMutableBytes { b in
            forChunks(length[0], 1, b.baseAddress!) { p, n in call("MPI_Bcast") { cmpi_bcast(p, n, 3, Int32(root)) } }
        }
        return Data(bytes)
    }

    /// Every rank's `t`, stacked: shape `[size] + t.shape` (the same shape on every rank).
    public func allGather(_ t: Tensor) -> Tensor {
        guard size > 1 else { return t.unsqueeze(0) }
        let code = Self.typeCode(t, "allGather")
        let counts = allGather([Double(t.count)])
        require(
            Set(counts.map { $0[0] }).count == 1,
            "allGather: ranks hold different element counts \(counts.map { Int($0[0]) }) for shape \(t.shape)")
        let src = t.contiguous()
        let out = Tensor(empty: [size] + t.shape, dtype: t.dtype)
        call("MPI_Allgather") {
            cmpi_allgather(src.storage.data + src.offset * t.dtype.byteSize, out.storage.data, Int32(t.count), code)
        }
        return out
    }

    /// Every rank's `values` (equal counts on every rank), in rank order.
    public func allGather(_ values: [Double]) -> [[Double]] {
        guard size > 1 else { return [values] }
        var out = [Double](repeating: 0, count: values.count * size)
        values.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                call("MPI_Allgather") { cmpi_allgather(src.baseAddress, dst.baseAddress, Int32(values.count), 1) }
            }
        }
        return (0..<size).map { Array(out[($0 * values.count)..<(($0 + 1) * values.count)]) }
    }

    /// Every rank's bytes, in rank order (lengths may differ).
    public func allGather(_ data: Data) -> [Data] {
        guard size > 1 else { return [data] }
        let lengths = allGather([Double(data.count)]).map { Int($0[0]) }
        let width = lengths.max() ?? 0
        var padded = [UInt8](data) + [UInt8](repeating: 0, count: width - data.count)
        var out = [UInt8](repeating: 0, count: width * size)
        padded.withUnsafeMutableBytes { src in
            out.withUnsafeMutableBytes { dst in
                call("MPI_Allgather") { cmpi_allgather(src.baseAddress, dst.baseAddress, Int32(width), 3) }
            }
        }
        return (0..<size).map { Data(out[($0 * width)..<($0 * width + lengths[$0])]) }
    }

    /// Waits until every rank has reached this call.
    public func barrier() {
        guard size > 1 else { return }
        call("MPI_Barrier") { cmpi_barrier() }
    }

    // MARK: Plumbing

    static func typeCode(_ t: Tensor, _ op: String) -> Int32 {
        require(t.isDense, "\(op): the tensor must be dense, got strides \(t.strides) for shape \(t.shape)")
        switch t.dtype {
        case .float32: return 0
        case .float64: return 1
        case .int64: return 2
        default: fatalError("\(op): float32, float64 or int64 tensors only, got \(t.dtype) of shape \(t.shape)")
        }
    }

    /// Runs one MPI call under the lock; a failure ends the job naming this rank, the call and MPI's reason.
    func call(_ name: String, _ body: () -> Int32) {
        let rc = lock.withLock { body() }
        check(rc, name)
    }

    /// Runs `body` holding the MPI lock; it gets whether MPI was finalized.
    func locked<R>(_ body: (_ finalized: Bool) -> R) -> R { lock.withLock { body(finalized) } }

    func check(_ rc: Int32, _ name: String) {
        guard rc == MPI_SUCCESS else { fail("\(name) failed: \(Self.errorString(rc))") }
    }

    func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("swiftai: rank \(rank) of \(size): \(message)\n".utf8))
        abort(exitCode: 1)
    }

    /// Splits a message of `count` elements into MPI's 32-bit counts.
    private func forChunks(
        _ count: Int, _ elementSize: Int, _ base: UnsafeMutableRawPointer,
        _ body: (UnsafeMutableRawPointer, Int32) -> Void
    ) {
        let most = Int(Int32.max)
        var start = 0
        while start < count {
            let n = Swift.min(most, count - start)
            body(base + start * elementSize, Int32(n))
            start += n
        }
    }

    static func errorString(_ code: Int32) -> String {
        var buf = [CChar](repeating: 0, count: 512)
        _ = cmpi_error_string(code, &buf, Int32(buf.count))
        return String(cString: buf) + " (error \(code))"
    }
}

/// A running ``ProcessGroup/startAllReduce(_:_:)``: poll with ``isComplete``, then ``wait()``.
public final class AllReduceWork {
    let group: ProcessGroup
    /// Keeps the buffer alive while MPI writes into it.
    public let tensor: Tensor
    var request: MPI_Request?
    var done = false

    init(group: ProcessGroup, tensor: Tensor) {
        self.group = group
        self.tensor = tensor
    }

    /// Whether the result has arrived (drives MPI's progress, as the group's progress thread does meanwhile).
    public var isComplete: Bool {
        group.locked { finalized in
            guard !done && !finalized else { return true }
            var flag: Int32 = 0
            group.check(cmpi_test(&request, &flag), "MPI_Test")
            done = flag != 0
            return done
        }
    }

    /// Blocks until the result has arrived.
    public func wait() {
        group.locked { finalized in
            guard !done && !finalized else { return }
            group.check(cmpi_wait(&request), "MPI_Wait")
            done = true
        }
    }
}
