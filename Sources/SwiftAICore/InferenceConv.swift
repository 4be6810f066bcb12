import CDNNL

// Convolutions frozen for inference, as onnxruntime runs them: the caller folds BatchNorm into the weights and
// bias; the residual add and the activation run inside oneDNN's convolution kernel as post-ops (no extra passes
// over the activations); and the weights are reordered into the kernel's blocked layout once per input geometry
// instead of on every call (at batch 1 those reorders cost resnet18 ~3 ms of its ~26 ms per image).

/// Element-wise steps applied after convolution + bias, in order, inside the kernel.
public enum ConvEpilogue: Hashable, Sendable {
    /// Adds the `residual` tensor given to ``InferenceConv/callAsFunction(_:residual:)`` (the output's shape).
    case addResidual
    /// `x > 0 ? x : slope·x` (slope 0 = ReLU).
    case leakyRelu(Double)
    /// `x + c`.
    case add(Double)
    /// `min(x, c)`.
    case clampMax(Double)
}

/// A float32 convolution with fixed weights, bias and epilogue, for evaluation without gradients.
///
/// Channels-last in and out, like ``Tensor/conv2d(weight:bias:stride:padding:groups:)``. Thread-safe.
public final class InferenceConv: @unchecked Sendable {
    /// `[OC, C/groups, KH, KW]`, contiguous.
    public let weight: Tensor
    /// `[OC]`.
    public let bias: Tensor
    public let stride: Int, padding: Int, groups: Int
    public let epilogue: [ConvEpilogue]
    private var packed: [ConvGeometry: (kernel: InferenceConvKernel, weights: DNNLMemory)] = [:]
    private var hwio: Tensor?
    private let lock = Mutex()

    public init(weight: Tensor, bias: Tensor, stride: Int, padding: Int, groups: Int = 1, epilogue: [ConvEpilogue] = [])
    {
        require(
            weight.dtype == .float32 && bias.dtype == .float32,
            "InferenceConv: float32 weight and bias needed, got \(weight.dtype), \(bias.dtype)")
        require(
            weight.rank == 4 && bias.shape == [weight.shape[0]],
            "InferenceConv: weight [OC, C/groups, KH, KW] and bias [OC] expected, got \(weight.shape) and \(bias.shape)"
        )
        require(
            epilogue.filter { $0 == .addResidual }.count <= 1,
            "InferenceConv: at most one residual add, got \(epilogue)")
        self.weight = weight.detached().contiguous()
        self.bias = bias.detached().contiguous()
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.epilogue = epilogue
    }

    /// Whether the epilogue adds a residual.
    public var addsResidual: Bool { epilogue.contains(.addResidual) }

    /// `epilogue(conv(x) + bias [+ residual])`.
    public func callAsFunction(_ x: Tensor, residual: Tensor? = nil) -> Tensor {
        require(
            x.dtype == .float32 && x.rank == 4 && x.shape[1] == weight.shape[1] * groups,
            "InferenceConv: expected float32 [N, \(weight.shape[1] * groups), H, W] input, got \(x.dtype) \(x.shape)")
        require(
            (residual != nil) == addsResidual, "InferenceConv: a residual is needed exactly when the epilogue adds one")
        let g = ConvGeometry(
            input: x.shape, weight: weight.shape, stride: (stride, stride), padding: (padding, padding), groups: groups)
        require(
            g.oh > 0 && g.ow > 0,
            "InferenceConv: input \(x.shape) too small for kernel \(weight.shape) with padding \(padding)")
        if SmallMapConv.applies(g) && g.kh * g.kw > 1 && prefersSmallMap(x, residual, g) {
            return smallMap(x, residual, g)
        }
        return direct(x, residual, g)
    }

    private struct PathKey: Hashable {
        let g: ConvGeometry, epilogue: [ConvEpilogue]
    }

    private static let smallMapChoice = PathChoice<PathKey>("conv.inference", rounds: 3)

    /// Whether the small-map GEMMs beat oneDNN's kernel for this geometry and epilogue on this CPU: timed once
    /// per geometry (on AVX2 they win at batch ≥ 16 on small maps; on AVX-512 hosts they can lose).
    private func prefersSmallMap(_ x: Tensor, _ residual: Tensor?, _ g: ConvGeometry) -> Bool {
        return Self.smallMapChoice.choose(PathKey(g: g, epilogue: epilogue), count: 2) { i in
            _ = i == 0 ? smallMap(x, residual, g) : direct(x, residual, g)
        } == 0
    }

    /// oneDNN's `forward_inference` kernel with the epilogue as post-ops.
    private func direct(_ x: Tensor, _ residual: Tensor?, _ g: ConvGeometry) -> Tensor {
        let (kernel, w) = lock.withLock { () -> (InferenceConvKernel, DNNLMemory) in
            if let p = packed[g] { return p }
            let k = InferenceConvKernel.get(g, epilogue)
            let p = (k, k.pack(weight))
            packed[g] = p
            return p
        }
        let xc = x.detached().contiguous(.channelsLast)
        let outShape = [g.n, g.oc, g.oh, g.ow]
        var y = Tensor(empty: outShape, dtype: .float32, strides: Tensor.channelsLastStrides(outShape))
        if let residual {
            require(
                residual.shape == outShape,
                "InferenceConv: residual \(residual.shape) should be the output's shape \(outShape)")
            y.copyElements(from: residual.detached())
        }
        kernel.run(x: xc.rawPointer, weights: w, bias: bias.rawPointer, y: y.rawPointer)
        return y
    }

    /// Batches of 16 or more on small maps: the per-position GEMMs of training (faster there than oneDNN's
    /// kernels), weights permuted once, the epilogue as element-wise passes.
    private func smallMap(_ x: Tensor, _ residual: Tensor?, _ g: ConvGeometry) -> Tensor {
        let s = SmallMapConv(g)
        let wt = lock.withLock { () -> Tensor in
            if let h = hwio { return h }
            hwio = s.hwio(weight)
            return hwio!
        }
        let outShape = [g.n, g.oc, g.oh, g.ow]
        var y = Tensor(empty: outShape, dtype: .float32, strides: Tensor.channelsLastStrides(outShape))
        let py = y.pointer(Float.self), pb = bias.pointer(Float.self)
        if let residual {
            require(
                residual.shape == outShape,
                "InferenceConv: residual \(residual.shape) should be the output's shape \(outShape)")
            y.copyElements(from: residual.detached())
            for r in 0..<(g.n * g.oh * g.ow) { for c in 0..<g.oc { py[r * g.oc + c] += pb[c] } }
        } else {
            for r in 0..<(g.n * g.oh * g.ow) { (py + r * g.oc).update(from: pb, count: g.oc) }
        }
        s.accumulate(x.detached().contiguous(.channelsLast), hwio: wt, into: y)
        for step in epilogue {
            switch step {
            case .addResidual: break
            case .leakyRelu(let slope): y = slope == 0 ? y.relu() : y.leakyRelu(slope)
            case .add(let c): y = y + c
            case .clampMax(let c): y = y.clamp(max: c)
            }
        }
        return y
    }
}

/// The compiled `forward_inference` primitive for one geometry and epilogue (shared by layers alike in both).
final class InferenceConvKernel {
    private let prim: DNNLPrimitive
    private let userWeightDesc: dnnl_memory_desc_t
    private let windows: DNNLWindows

    init(_ g: ConvGeometry, _ epilogue: [ConvEpilogue]) {
        let m = g.memoryDescs()
        userWeightDesc = m.weights
        windows = DNNLWindows([(DNNL_ARG_SRC, m.src), (DNNL_ARG_BIAS, m.bias), (DNNL_ARG_DST, m.dst)])
        var desc = g.forwardDesc(dnnl_forward_inference, bias: true)
        var po: dnnl_post_ops_t? = nil
        DNNL.check(dnnl_post_ops_create(&po), "post_ops_create")
        for step in epilogue {
            switch step {
            case .addResidual: DNNL.check(dnnl_post_ops_append_sum(po, 1), "post_ops sum")
            case .leakyRelu(let slope):
                DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_relu, Float(slope), 0), "post_ops relu")
            case .add(let c):
                DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_linear, 1, Float(c)), "post_ops linear")
            case .clampMax(let c):
                DNNL.check(
                    dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_clip, -.greatestFiniteMagnitude, Float(c)),
                    "post_ops clip")
            }
        }
        var attr: dnnl_primitive_attr_t? = nil
        DNNL.check(dnnl_primitive_attr_create(&attr), "primitive_attr_create")
        DNNL.check(dnnl_primitive_attr_set_post_ops(attr, po), "primitive_attr_set_post_ops")
        prim = DNNLPrimitive.fastestOfTeamOrOne([DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST]) {
            DNNLPrimitive(&desc, attr: attr, "inference conv")
        }
        dnnl_primitive_attr_destroy(attr)
        dnnl_post_ops_destroy(po)
    }

    /// `w` (contiguous OIHW) in the primitive's layout, in memory of its own.
    func pack(_ w: Tensor) -> DNNLMemory { prim.packWeights(w.rawPointer, user: userWeightDesc) }

    /// Several threads may use one kernel at once (each call takes its own memory windows).
    func run(x: UnsafeMutableRawPointer, weights: DNNLMemory, bias: UnsafeMutableRawPointer, y: UnsafeMutableRawPointer)
    {
        windows.execute(prim, [x, bias, y], fixed: [(DNNL_ARG_WEIGHTS, weights)])
    }

    private static let cache = KernelCache<InferenceConvKernel>()

    static func get(_ g: ConvGeometry, _ epilogue: [ConvEpilogue]) -> InferenceConvKernel {
        cache.get(g.key + "|\(epilogue)") { InferenceConvKernel(g, epilogue) }
    }

    /// The implementation oneDNN picked (e.g. `jit:avx2`), for benchmarks.
    var implementation: String { prim.implementation }
}
