import CDNNL
#if canImport(Glibc)
    import Glibc
#endif

/// Thin ownership wrappers over oneDNN's C API. Everything here is internal to the kernels layer.
enum DNNL {
    static let engine: dnnl_engine_t = {
        _ = Parallel.threadCount  // applies SWIFTAI_NUM_THREADS before oneDNN starts its team
        var e: dnnl_engine_t? = nil
        check(dnnl_engine_create(&e, dnnl_cpu, 0), "engine_create")
        return e!
    }()

    static let stream: dnnl_stream_t = {
        var s: dnnl_stream_t? = nil
        check(dnnl_stream_create(&s, engine, dnnl_stream_default_flags.rawValue), "stream_create")
        return s!
    }()

    /// oneDNN failures inside a kernel are programmer errors (unsupported geometry), not bad input.
    static func check(_ s: dnnl_status_t, _ what: String) {
        if s != dnnl_success { fatalError("oneDNN \(what) failed (dnnl_status_t \(s.rawValue))") }
    }

    /// A plain memory descriptor with explicit strides (elements).
    static func desc(_ dims: [Int], strides: [Int], _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        var md = dnnl_memory_desc_t()
        var d = dims.map(Int64.init), s = strides.map(Int64.init)
        check(dnnl_memory_desc_init_by_strides(&md, Int32(dims.count), &d, type, &s), "memory_desc_init_by_strides")
        return md
    }

    /// A descriptor with a format tag (`dnnl_format_tag_any` lets a primitive choose).
    static func desc(_ dims: [Int], tag: dnnl_format_tag_t, _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        var md = dnnl_memory_desc_t()
        var d = dims.map(Int64.init)
        check(dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), &d, type, tag), "memory_desc_init_by_tag")
        return md
    }

    static func equal(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t) -> Bool {
        var a = a, b = b
        return dnnl_memory_desc_equal(&a, &b) != 0
    }

    static func bytes(_ md: dnnl_memory_desc_t) -> Int {
        var m = md
        return Int(dnnl_memory_desc_get_size(&m))
    }
}

/// A primitive and its descriptor (kept for backward hints and memory queries).
final class DNNLPrimitive {
    let pd: dnnl_primitive_desc_t
    let primitive: dnnl_primitive_t

    /// - Parameters:
    ///   - opDesc: pointer to an initialised op descriptor (`dnnl_convolution_desc_t`, ...).
    ///   - hint: the forward primitive descriptor, for backward primitives.
    ///   - attr: primitive attributes (post-ops), if any.
    init(
        _ opDesc: UnsafeRawPointer, hint: dnnl_primitive_desc_t? = nil, attr: dnnl_primitive_attr_t? = nil,
        _ what: String
    ) {
        let a = DNNLPrimitive.userScratchpad(attr)
        defer { dnnl_primitive_attr_destroy(a) }
        var pd: dnnl_primitive_desc_t? = nil
        DNNL.check(dnnl_primitive_desc_create(&pd, opDesc, a, DNNL.engine, hint), "\(what) primitive_desc_create")
        var p: dnnl_primitive_t? = nil
        DNNL.check(dnnl_primitive_create(&p, pd), "\(what) primitive_create")
        self.pd = pd!
        self.primitive = p!
        scratchpad = DNNLScratchpads(pd!)
    }

    /// A reorder between two layouts.
    init(reorderFrom src: dnnl_memory_desc_t, to dst: dnnl_memory_desc_t) {
        var s = src, d = dst
        let a = DNNLPrimitive.userScratchpad(nil)
        defer { dnnl_primitive_attr_destroy(a) }
        var pd: dnnl_primitive_desc_t? = nil
        DNNL.check(
            dnnl_reorder_primitive_desc_create(&pd, &s, DNNL.engine, &d, DNNL.engine, a),
            "reorder primitive_desc_create")
        var p: dnnl_primitive_t? = nil
        DNNL.check(dnnl_primitive_create(&p, pd), "reorder primitive_create")
        self.pd = pd!
        self.primitive = p!
        scratchpad = DNNLScratchpads(pd!)
    }

    /// Per-primitive scratchpads, handed to each execution (nil: the primitive needs none).
    private let scratchpad: DNNLScratchpads?

    /// A copy of `attr` (or default attributes) with the scratchpad mode set to `user`. In the default (`library`)
    /// mode some implementations — the GEMM-based convolutions (`gemm:jit`, which oneDNN picks for backward-weights
    /// on small maps when limited to AVX2), the int8 GEMM convolutions, RNNs — use oneDNN's *global* scratchpad,
    /// which lives in thread-local storage of the thread that *executes* but is sized by the primitives *created* on
    /// that thread. Our kernels are created on one thread, cached (``KernelCache``) and executed on others (concurrent
    /// tasks): the execution then writes a scratchpad of the creating thread's size into the executing thread's
    /// smaller (or null) one — heap corruption. With `user` mode each execution gets its
    /// own buffer (``DNNLScratchpads``).
    private static func userScratchpad(_ attr: dnnl_primitive_attr_t?) -> dnnl_primitive_attr_t {
        var a: dnnl_primitive_attr_t? = nil
        if let attr {
            DNNL.check(dnnl_primitive_attr_clone(&a, attr), "primitive_attr_clone")
        } else {
            DNNL.check(dnnl_primitive_attr_create(&a), "primitive_attr_create")
        }
        DNNL.check(dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user), "set_scratchpad_mode")
        return a!
    }

    /// The memory descriptor the primitive expects for `what` (e.g. `dnnl_query_weights_md`).
    func md(_ what: dnnl_query_t, _ index: Int32 = 0) -> dnnl_memory_desc_t {
        dnnl_primitive_desc_query_md(pd, what, index)!.pointee
    }

    /// The weights at `w` (laid out as `user`) in this primitive's weights layout, in memory of their own: reordered,
    /// or copied when the layouts agree. Done once per layer and geometry by the inference kernels.
    func packWeights(_ w: UnsafeMutableRawPointer, user: dnnl_memory_desc_t) -> DNNLMemory {
        let wmd = md(dnnl_query_weights_md)
        let packed = DNNLMemory(wmd, owned: true)
        if DNNL.equal(wmd, user) {
            packed.pointer.copyMemory(from: w, byteCount: DNNL.bytes(user))
        } else {
            DNNLPrimitive(reorderFrom: user, to: wmd).execute([
                (DNNL_ARG_FROM, DNNLMemory(user).bind(w)), (DNNL_ARG_TO, packed)
            ])
        }
        return packed
    }

    /// Human-readable implementation name (e.g. `brg:avx512_core`).
    var implementation: String {
        var s: UnsafePointer<CChar>? = nil
        DNNL.check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s), "query impl")
        return String(cString: s!)
    }

    /// Runs the primitive on `args` (argument kind, memory) and waits.
    func execute(_ args: [(Int32, DNNLMemory)]) {
        var a = args.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1.memory) }
        execute(&a)
    }

    /// Runs the primitive on a prepared argument list and waits.
    func execute(_ args: inout [dnnl_exec_arg_t]) {
        guard let scratchpad else {
            DNNL.check(dnnl_primitive_execute(primitive, DNNL.stream, Int32(args.count), &args), "primitive_execute")
            DNNL.check(dnnl_stream_wait(DNNL.stream), "stream_wait")
            return
        }
        scratchpad.withBuffer { buffer in
            var a = args + [dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: buffer.memory)]
            DNNL.check(dnnl_primitive_execute(primitive, DNNL.stream, Int32(a.count), &a), "primitive_execute")
            DNNL.check(dnnl_stream_wait(DNNL.stream), "stream_wait")
        }
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(pd)
    }
}

/// Scratchpad for one primitive (created with `dnnl_scratchpad_mode_user`): each execution gets its own buffer
/// from the ``BlockCache`` (so primitives run one after another reuse the same blocks, as oneDNN's global
/// scratchpad did), through a memory window taken from a free list, so concurrent executions never share one.
final class DNNLScratchpads: @unchecked Sendable {
    private let desc: dnnl_memory_desc_t
    private let bytes: Int
    private var free: [DNNLMemory] = []
    private let lock = Mutex()

    /// Nil when the primitive of `pd` needs no scratchpad.
    init?(_ pd: dnnl_primitive_desc_t) {
        guard let md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) else { return nil }
        bytes = DNNL.bytes(md.pointee)
        guard bytes > 0 else { return nil }
        desc = md.pointee
    }

    /// Runs `body` with a scratchpad memory of its own.
    func withBuffer(_ body: (DNNLMemory) -> Void) {
        let window = lock.withLock { free.popLast() } ?? DNNLMemory(desc)
        let p = BlockCache.shared.allocate(bytes)
        body(window.bind(p))
        BlockCache.shared.release(p, byteCount: bytes)
        lock.withLock { free.append(window) }
    }
}

/// A oneDNN memory object: either a window onto tensor storage (handle set per call) or a buffer
/// owned by oneDNN (for blocked weight layouts).
final class DNNLMemory {
    let memory: dnnl_memory_t
    let desc: dnnl_memory_desc_t

    init(_ md: dnnl_memory_desc_t, owned: Bool = false) {
        var m: dnnl_memory_t? = nil
        var d = md
        DNNL.check(dnnl_memory_create(&m, &d, DNNL.engine, owned ? cdnnl_memory_allocate() : nil), "memory_create")
        memory = m!
        desc = md
    }

    /// Points the memory at `p` and returns self.
    @discardableResult
    func bind(_ p: UnsafeMutableRawPointer) -> DNNLMemory {
        DNNL.check(dnnl_memory_set_data_handle(memory, p), "memory_set_data_handle")
        return self
    }

    var pointer: UnsafeMutableRawPointer {
        var p: UnsafeMutableRawPointer? = nil
        DNNL.check(dnnl_memory_get_data_handle(memory, &p), "memory_get_data_handle")
        return p!
    }

    deinit { dnnl_memory_destroy(memory) }
}

extension DNNLPrimitive {
    /// The faster of `build()` made for the whole thread team and made for one thread, timed alternately on
    /// zero-filled buffers (`arguments`). At batch 1 on small maps a fork and join of the team can cost more than
    /// the work it splits; where that happens depends on the host, so it is measured, once per kernel.
    static func fastestOfTeamOrOne(_ arguments: [Int32], _ build: () -> DNNLPrimitive) -> DNNLPrimitive {
        let team = build()
        // Past a megabyte of operands the work dwarfs a fork and join (microseconds): the team, without a trial
        // (which would also allocate and zero that much).
        let bytes = arguments.reduce(0) { $0 + DNNL.bytes(team.md(dnnl_query_exec_arg_md, $1)) }
        guard Parallel.threadCount > 1, bytes <= 1 << 20 else { return team }
        let one = Parallel.withOneThread(build)
        func trial(_ p: DNNLPrimitive) -> () -> Double {
            let args = arguments.map { arg -> (Int32, DNNLMemory) in
                let m = DNNLMemory(p.md(dnnl_query_exec_arg_md, arg), owned: true)
                memset(m.pointer, 0, DNNL.bytes(m.desc))
                return (arg, m)
            }
            return {
                var a = timespec(), b = timespec()
                clock_gettime(CLOCK_MONOTONIC, &a)
                p.execute(args)
                clock_gettime(CLOCK_MONOTONIC, &b)
                return Double(b.tv_sec - a.tv_sec) + Double(b.tv_nsec - a.tv_nsec) * 1e-9
            }
        }
        let runTeam = trial(team), runOne = trial(one)
        _ = (runTeam(), runOne())
        var best = (team: Double.infinity, one: Double.infinity)
        for _ in 0..<7 {
            best.team = Swift.min(best.team, runTeam())
            best.one = Swift.min(best.one, runOne())
        }
        return best.one < best.team ? one : team
    }
}

/// Memory objects for the per-call buffers of one primitive (source, destination, …), kept for reuse: creating
/// them costs about as much as a batch-1 convolution on a small map. A call takes a set from a free list and
/// returns it, so concurrent calls never share one.
final class DNNLWindows: @unchecked Sendable {
    private let arguments: [(Int32, dnnl_memory_desc_t)]
    private var free: [WindowSet] = []
    private let lock = Mutex()

    /// One set of windows with its argument list (the fixed memories' slots at the end, filled per call).
    private final class WindowSet {
        let windows: [DNNLMemory]
        var args: [dnnl_exec_arg_t]

        init(_ arguments: [(Int32, dnnl_memory_desc_t)], fixed: Int) {
            windows = arguments.map { DNNLMemory($0.1) }
            args =
                zip(arguments, windows).map { dnnl_exec_arg_t(arg: $0.0.0, memory: $0.1.memory) }
                + Array(repeating: dnnl_exec_arg_t(), count: fixed)
        }
    }

    /// The arguments whose buffers change per call, with their layouts.
    init(_ arguments: [(Int32, dnnl_memory_desc_t)]) { self.arguments = arguments }

    /// Runs `primitive` with the windows pointed at `pointers` (in the order given at init) and the `fixed` memories.
    func execute(_ primitive: DNNLPrimitive, _ pointers: [UnsafeMutableRawPointer], fixed: [(Int32, DNNLMemory)]) {
        let set = lock.withLock { free.popLast() } ?? WindowSet(arguments, fixed: fixed.count)
        require(
            pointers.count == arguments.count && set.args.count == arguments.count + fixed.count,
            "DNNLWindows: \(pointers.count) buffers and \(fixed.count) fixed memories for \(arguments.count) windows")
        for (window, p) in zip(set.windows, pointers) { window.bind(p) }
        for (i, f) in fixed.enumerated() {
            set.args[arguments.count + i] = dnnl_exec_arg_t(arg: f.0, memory: f.1.memory)
        }
        primitive.execute(&set.args)
        lock.withLock { free.append(set) }
    }
}

/// A pthread mutex with stable storage.
final class Mutex: @unchecked Sendable {
    private let m: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        m = .allocate(capacity: 1)
        pthread_mutex_init(m, nil)
    }

    deinit {
        pthread_mutex_destroy(m)
        m.deallocate()
    }

    func lock() { pthread_mutex_lock(m) }
    func unlock() { pthread_mutex_unlock(m) }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// Per-shape cache of compiled kernels (creating a oneDNN primitive JIT-compiles code).
final class KernelCache<Entry>: @unchecked Sendable {
    private var entries: [String: Entry] = [:]
    private let mutex = Mutex()

    func get(_ key: String, _ make: () -> Entry) -> Entry {
        mutex.lock()
        defer { mutex.unlock() }
        if let e = entries[key] { return e }
        let e = make()
        entries[key] = e
        return e
    }
}

extension Tensor {
    /// Raw pointer to this view's first element.
    var rawPointer: UnsafeMutableRawPointer { storage.data + offset * dtype.byteSize }
}
