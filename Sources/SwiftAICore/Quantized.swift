import CDNNL

// int8 inference kernels (issue #12): activations as uint8 with an affine scale and zero point (PyTorch's quint8),
// weights as int8 per output channel, symmetric (PyTorch's per-channel qint8), convolutions as oneDNN u8·s8
// primitives with the scales as attributes and the bias, residual add, activation and requantization as post-ops.
// Without VNNI, AVX2's `vpmaddubsw` adds two u8·s8 products in 16 bits and saturates beyond 32 767, so activations
// keep to 7 bits (0…127: 2·127·128 fits) — PyTorch's fbgemm/x86 `reduce_range`.

/// Affine uint8 quantization: `real = scale · (q − zeroPoint)`, `q ∈ 0…qmax`.
public struct QParams: Equatable, Sendable, CustomStringConvertible {
    public let scale: Float
    public let zeroPoint: Int32
    /// 127 (7 bits, CPUs without VNNI) or 255.
    public let qmax: Int32

    /// Checked parameters, or nil when `scale` is not finite and positive or `zeroPoint` is outside `0…qmax`.
    public init?(scale: Float, zeroPoint: Int32, qmax: Int32) {
        guard scale.isFinite, scale > 0, qmax == 127 || qmax == 255, (0...qmax).contains(zeroPoint) else { return nil }
        self.scale = scale
        self.zeroPoint = zeroPoint
        self.qmax = qmax
    }

    /// PyTorch's `MinMaxObserver.calculate_qparams` (affine quint8): the range widened to include 0, `scale` at least
    /// float32's epsilon, `zeroPoint = −round(min/scale)` (half to even) clamped to `0…qmax`.
    public init(min lo: Float, max hi: Float, qmax: Int32) {
        require(lo.isFinite && hi.isFinite && lo <= hi, "QParams: range \(lo)…\(hi) must be finite and ordered")
        let lo = Swift.min(lo, 0), hi = Swift.max(hi, 0)
        let scale = Swift.max((hi - lo) / Float(qmax), Float.ulpOfOne)
        let zp = Int32(Swift.min(Swift.max(-(lo / scale).rounded(.toNearestOrEven), 0), Float(qmax)))
        self.init(scale: scale, zeroPoint: zp, qmax: qmax)!
    }

    /// The real range the codes cover.
    public var range: ClosedRange<Float> { scale * Float(-zeroPoint)...scale * Float(qmax - zeroPoint) }

    public var description: String { "scale \(scale), zero point \(zeroPoint), 0…\(qmax)" }
}

/// What the CPU offers int8 kernels.
public enum Quantization {
    /// Whether the CPU has VNNI (avx512_vnni or avx_vnni): u8·s8 dot products accumulate in 32 bits.
    public static let hasVNNI: Bool = {
        let isa = dnnl_get_effective_cpu_isa().rawValue
        return isa & 0x40 != 0 || isa & 0x400 != 0  // the avx512_core_vnni and avx2_vnni bits of dnnl_cpu_isa_t
    }()

    /// Largest activation code: 255 with VNNI, else 127 (`reduce_range`).
    public static var activationQMax: Int32 { hasVNNI ? 255 : 127 }

    /// Per-output-channel symmetric int8 weights (PyTorch's `per_channel_symmetric` qint8 observer):
    /// `scale = max(max|w|/127.5, ε)`, `q = clamp(round(w/scale), −128, 127)`. Returns the int8 weights (same shape)
    /// and the float32 scales `[OC]`. NaN weights get the code 0, infinities the extreme codes, and neither widens the
    /// scale;
    /// quantizers refuse such models before (``Tensor/allFinite``).
    public static func quantizePerChannel(_ w: Tensor) -> (weight: Tensor, scales: Tensor) {
        require(
            w.rank >= 2 && w.dtype.isFloatingPoint,
            "quantizePerChannel: floating-point weight [OC, …] expected, got \(w.dtype) \(w.shape)")
        let x = w.detached().to(.float32).contiguous()
        let oc = x.shape[0], k = x.count / Swift.max(oc, 1)
        let q = Tensor(empty: x.shape, dtype: .int8)
        let s = Tensor(empty: [oc], dtype: .float32)
        let px = x.pointer(Float.self), pq = q.pointer(Int8.self), ps = s.pointer(Float.self)
        for c in 0..<oc {
            var amax: Float = 0
            for i in 0..<k where px[c * k + i].isFinite { amax = Swift.max(amax, abs(px[c * k + i])) }
            let scale = Swift.max(amax / 127.5, Float.ulpOfOne)
            ps[c] = scale
            let inv = 1 / scale  // PyTorch multiplies by the inverse
            for i in 0..<k {
                let v = px[c * k + i]
                pq[c * k + i] = v.isNaN ? 0 : Int8(Swift.min(Swift.max((v * inv).rounded(.toNearestOrEven), -128), 127))
            }
        }
        return (q, s)
    }
}

extension Tensor {
    /// Whether every element is finite (no NaN or infinity).
    public var allFinite: Bool { to(.float32).contiguous().floats.allSatisfy(\.isFinite) }

    /// float32 → uint8 codes `clamp(round(x/scale) + zeroPoint, 0, qmax)`; 4-D results are channels-last.
    public func quantized(_ q: QParams) -> Tensor {
        require(dtype == .float32, "quantize: float32 input expected, got \(dtype) \(shape)")
        let x = rank == 4 ? detached().contiguous(.channelsLast) : detached().contiguous()
        let y = Tensor(empty: shape, dtype: .uint8, strides: x.strides)
        let px = x.pointer(Float.self), py = y.pointer(UInt8.self)
        let inv = 1 / q.scale, zp = Float(q.zeroPoint), hi = Float(q.qmax)
        Parallel.forEachChunk(count) { r in
            for i in r { py[i] = UInt8(Swift.min(Swift.max((px[i] * inv).rounded(.toNearestOrEven) + zp, 0), hi)) }
        }
        return y
    }

    /// uint8 codes → float32 `scale · (q − zeroPoint)`, in the same layout.
    public func dequantized(_ q: QParams) -> Tensor {
        require(dtype == .uint8, "dequantize: uint8 codes expected, got \(dtype) \(shape)")
        let x = rank == 4 ? contiguous(.channelsLast) : contiguous()
        let y = Tensor(empty: shape, dtype: .float32, strides: x.strides)
        let px = x.pointer(UInt8.self), py = y.pointer(Float.self)
        let s = q.scale, zp = Float(q.zeroPoint)
        Parallel.forEachChunk(count) { r in for i in r { py[i] = s * (Float(px[i]) - zp) } }
        return y
    }

    /// Max pooling of uint8 codes (the scale is unchanged); channels-last `[N, C, H, W]`.
    public func quantizedMaxPool2d(kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false) -> Tensor
    {
        let s = stride ?? kernel
        return quantizedPool(
            PoolAxis(
                length: shape[2], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode, includePad: false),
            PoolAxis(
                length: shape[3], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode, includePad: false),
            max: true, zeroPoint: 0)
    }

    /// Average pooling of uint8 codes with zero point `zeroPoint` (padding counts as the real value 0 when
    /// `countIncludePad`), rounded to nearest; channels-last `[N, C, H, W]`.
    public func quantizedAvgPool2d(
        kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
        countIncludePad: Bool = true, zeroPoint: Int32
    ) -> Tensor {
        let s = stride ?? kernel
        return quantizedPool(
            PoolAxis(
                length: shape[2], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode,
                includePad: countIncludePad),
            PoolAxis(
                length: shape[3], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode,
                includePad: countIncludePad),
            max: false, zeroPoint: zeroPoint)
    }

    private func quantizedPool(_ ah: PoolAxis, _ aw: PoolAxis, max: Bool, zeroPoint: Int32) -> Tensor {
        require(dtype == .uint8 && rank == 4, "quantized pool: uint8 [N, C, H, W] expected, got \(dtype) \(shape)")
        require(ah.count > 0 && aw.count > 0, "quantized pool: output size is too small for input \(shape)")
        let x = contiguous(.channelsLast)
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let outShape = [n, c, ah.count, aw.count]
        let y = Tensor(empty: outShape, dtype: .uint8, strides: Tensor.channelsLastStrides(outShape))
        let px = x.pointer(UInt8.self), py = y.pointer(UInt8.self)
        // Split only when each thread reads at least 32 KiB: a fork costs more than pooling a small map.
        let rowBytes = Swift.max(1, h * w * c / ah.count)
        Parallel.forEachChunk(n * ah.count, grain: Swift.max(1, 32_768 / rowBytes)) { rows in
            quantizedPoolRows(rows, px, py, c: c, h: h, w: w, ah, aw, max: max, zeroPoint: zeroPoint)
        }
        return y
    }
}

extension Tensor {
    /// Quantization simulated in float32 for quantization-aware training: `dequantize(quantize(x, q))`, with the
    /// straight-through gradient (passed where `x` lies inside the codes' range, zero where it was clamped) —
    /// PyTorch's `fake_quantize_per_tensor_affine`.
    public func fakeQuantized(_ q: QParams) -> Tensor {
        require(dtype == .float32, "fakeQuantized: float32 input expected, got \(dtype) \(shape)")
        let x = rank == 4 ? detached().contiguous(.channelsLast) : detached().contiguous()
        var y = Tensor(empty: shape, dtype: .float32, strides: x.strides)
        let grad = Tensor.needsGrad(self)
        let mask = grad ? Tensor(empty: shape, dtype: .float32, strides: x.strides) : y
        let px = x.pointer(Float.self), py = y.pointer(Float.self), pm = mask.pointer(Float.self)
        let inv = 1 / q.scale, s = q.scale, zp = Float(q.zeroPoint), hi = Float(q.qmax)
        Parallel.forEachChunk(count) { r in
            for i in r {
                let c = (px[i] * inv).rounded(.toNearestOrEven) + zp
                if grad { pm[i] = c >= 0 && c <= hi ? 1 : 0 }
                py[i] = s * (Swift.min(Swift.max(c, 0), hi) - zp)
            }
        }
        if grad { y.recordGrad("fake_quantize", [self]) { g in [g * mask] } }
        return y
    }

    /// Per-output-channel symmetric int8 weights simulated in float32 (``Quantization/quantizePerChannel(_:)``),
    /// gradient passed straight through (every weight lies inside its channel's range).
    public func fakeQuantizedPerChannel() -> Tensor {
        let (q, s) = Quantization.quantizePerChannel(self)
        var y = q.to(.float32) * s.reshape([-1] + Array(repeating: 1, count: rank - 1))
        if dtype != .float32 { y = y.to(dtype) }
        if Tensor.needsGrad(self) { y.recordGrad("fake_quantize_per_channel", [self]) { g in [g] } }
        return y
    }
}

/// A convolution on uint8 activations with int8 weights (BatchNorm already folded in), for inference.
///
/// Computes `quantize(epilogue(conv(x̂, ŵ) + bias [+ residual̂]), output)` where x̂, ŵ and residual̂ are the real
/// values the codes stand for; oneDNN accumulates in int32 and applies the rest as attributes and post-ops.
/// Channels-last uint8 in and out. Thread-safe.
public final class Int8Conv: @unchecked Sendable {
    /// int8 `[OC, C/groups, KH, KW]`.
    public let weight: Tensor
    /// float32 `[OC]`: one scale per output channel (zero point 0).
    public let weightScales: Tensor
    /// float32 `[OC]`, real units.
    public let bias: Tensor
    public let stride: Int, padding: Int, groups: Int
    public let input: QParams, output: QParams
    /// The residual's quantization when the epilogue adds one.
    public let residual: QParams?
    public let epilogue: [ConvEpilogue]
    /// The largest input code this host's u8·s8 kernels take without overflow (127 where `vpmaddubsw` saturates:
    /// no VNNI). Wider input codes (an 8-bit model from a VNNI host) take a correct, slower path: the convolution
    /// of the dequantized values in float32, requantized.
    public let kernelQMax: Int32
    private var packed: [ConvGeometry: (kernel: Int8ConvKernel, weights: DNNLMemory)] = [:]
    private var float: InferenceConv?
    private let lock = Mutex()

    public init(
        weight: Tensor, weightScales: Tensor, bias: Tensor, stride: Int, padding: Int, groups: Int = 1,
        input: QParams, output: QParams, residual: QParams? = nil, epilogue: [ConvEpilogue] = [],
        kernelQMax: Int32 = Quantization.activationQMax
    ) {
        require(
            weight.dtype == .int8 && weight.rank == 4 && weightScales.dtype == .float32 && bias.dtype == .float32
                && weightScales.shape == [weight.shape[0]] && bias.shape == [weight.shape[0]],
            """
            Int8Conv: int8 weight [OC, C/groups, KH, KW] with float32 scales and bias [OC] expected, got \
            \(weight.dtype) \(weight.shape), \(weightScales.dtype) \(weightScales.shape), \(bias.dtype) \(bias.shape)
            """
        )
        require(
            (residual != nil) == epilogue.contains(.addResidual) && epilogue.filter { $0 == .addResidual }.count <= 1,
            "Int8Conv: residual quantization is needed exactly when the epilogue adds one residual, got \(epilogue)")
        self.weight = weight.contiguous()
        self.weightScales = weightScales.contiguous()
        self.bias = bias.contiguous()
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.input = input
        self.output = output
        self.residual = residual
        self.epilogue = epilogue
        self.kernelQMax = kernelQMax
    }

    /// Whether inputs run through the float32 path (their codes could overflow this host's int8 kernels).
    public var runsInFloat: Bool { input.qmax > kernelQMax }

    /// The uint8 codes of `epilogue(conv(x) + bias [+ residual])` at ``output``'s scale.
    public func callAsFunction(_ x: Tensor, residual r: Tensor? = nil) -> Tensor {
        require(
            x.dtype == .uint8 && x.rank == 4 && x.shape[1] == weight.shape[1] * groups,
            "Int8Conv: expected uint8 [N, \(weight.shape[1] * groups), H, W] input, got \(x.dtype) \(x.shape)")
        require((r != nil) == (residual != nil), "Int8Conv: a residual is needed exactly when the epilogue adds one")
        if runsInFloat {
            let conv = lock.withLock { () -> InferenceConv in
                if let f = float { return f }
                let w = weight.to(.float32) * weightScales.reshape([-1, 1, 1, 1])
                float = InferenceConv(
                    weight: w, bias: bias, stride: stride, padding: padding, groups: groups,
                    epilogue: epilogue)
                return float!
            }
            return conv(x.dequantized(input), residual: r.map { $0.dequantized(residual!) }).quantized(output)
        }
        let g = ConvGeometry(
            input: x.shape, weight: weight.shape, stride: (stride, stride), padding: (padding, padding), groups: groups)
        require(
            g.oh > 0 && g.ow > 0,
            "Int8Conv: input \(x.shape) too small for kernel \(weight.shape) with padding \(padding)")
        let (kernel, w) = lock.withLock { () -> (Int8ConvKernel, DNNLMemory) in
            if let p = packed[g] { return p }
            let k = Int8ConvKernel(g, self)
            let p = (k, k.pack(weight))
            packed[g] = p
            return p
        }
        let xc = x.contiguous(.channelsLast)
        let outShape = [g.n, g.oc, g.oh, g.ow]
        var y = Tensor(empty: outShape, dtype: .uint8, strides: Tensor.channelsLastStrides(outShape))
        if let r {
            require(
                r.shape == outShape && r.dtype == .uint8,
                "Int8Conv: residual \(r.dtype) \(r.shape) should be uint8 \(outShape)")
            y.copyElements(from: r)
        }
        kernel.run(x: xc.rawPointer, weights: w, y: y.rawPointer)
        return y
    }

    /// The implementation oneDNN picked for an input of `shape` (e.g. `jit_uni_int8:avx2`), for benchmarks and tests.
    public func implementation(forInput shape: [Int]) -> String {
        let g = ConvGeometry(
            input: shape, weight: weight.shape, stride: (stride, stride), padding: (padding, padding), groups: groups)
        return Int8ConvKernel(g, self).implementation
    }
}

/// The compiled u8·s8 `forward_inference` primitive of one ``Int8Conv`` at one geometry.
final class Int8ConvKernel {
    private let prim: DNNLPrimitive
    private let userWeightDesc: dnnl_memory_desc_t
    private let windows: DNNLWindows
    /// The bias in accumulator units, `bias / (input scale · weight scale)` (oneDNN adds it before scaling).
    private let scaledBias: DNNLMemory

    /// With `floatOutput` the destination is float32 in real units (no requantization).
    init(_ g: ConvGeometry, _ q: Int8Conv, floatOutput: Bool = false) {
        let dt = floatOutput ? dnnl_f32 : dnnl_u8
        let m = g.memoryDescs(src: dnnl_u8, weights: dnnl_s8, dst: dt)
        userWeightDesc = m.weights
        windows = DNNLWindows([(DNNL_ARG_SRC, m.src), (DNNL_ARG_DST, m.dst)])
        var desc = g.forwardDesc(dnnl_forward_inference, bias: true, src: dnnl_u8, weights: dnnl_s8, dst: dt)
        let ws = q.weightScales.floats, b = q.bias.floats
        var scales = ws.map { q.input.scale * $0 }
        scaledBias = DNNLMemory(m.bias, owned: true)
        let pb = scaledBias.pointer.assumingMemoryBound(to: Float.self)
        for (i, (bi, si)) in zip(b, scales).enumerated() { pb[i] = bi / si }
        var attr: dnnl_primitive_attr_t? = nil
        DNNL.check(dnnl_primitive_attr_create(&attr), "primitive_attr_create")
        DNNL.check(dnnl_primitive_attr_set_output_scales(attr, Int64(g.oc), 1 << 1, &scales), "set_output_scales")
        if q.input.zeroPoint != 0 {
            var zp = q.input.zeroPoint
            DNNL.check(dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &zp), "set_zero_points")
        }
        var po: dnnl_post_ops_t? = nil
        DNNL.check(dnnl_post_ops_create(&po), "post_ops_create")
        // Adds and clamps are gathered into one affine step and one clip (jit_uni_int8 computes wrongly after two
        // consecutive `eltwise_linear` post-ops), requantization included.
        var alpha: Float = 1, beta: Float = 0, upper = Float.infinity
        func flush() {
            if alpha != 1 || beta != 0 {
                DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_linear, alpha, beta), "post_ops linear")
            }
            if upper < .infinity {
                DNNL.check(
                    dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_clip, -.greatestFiniteMagnitude, upper),
                    "post_ops clip")
            }
            (alpha, beta, upper) = (1, 0, .infinity)
        }
        for step in q.epilogue {
            switch step {
            case .addResidual:
                flush()
                let r = q.residual!
                DNNL.check(dnnl_post_ops_append_sum_v3(po, r.scale, r.zeroPoint, dnnl_u8), "post_ops sum")
            case .leakyRelu(let slope):
                flush()
                DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_relu, Float(slope), 0), "post_ops relu")
            case .add(let c): (beta, upper) = (beta + Float(c), upper + Float(c))
            case .clampMax(let c): upper = Swift.min(upper, Float(c))
            }
        }
        if floatOutput {
            flush()
        } else {  // requantize to the output's codes, kept within 0…qmax
            let (s, z) = (1 / q.output.scale, Float(q.output.zeroPoint))
            (alpha, beta, upper) = (alpha * s, beta * s + z, Swift.min(upper * s + z, Float(q.output.qmax)))
            DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_linear, alpha, beta), "post_ops requantize")
            DNNL.check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_clip, 0, upper), "post_ops clip")
        }
        DNNL.check(dnnl_primitive_attr_set_post_ops(attr, po), "primitive_attr_set_post_ops")
        prim = DNNLPrimitive.fastestOfTeamOrOne([DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST]) {
            DNNLPrimitive(&desc, attr: attr, "quantized conv")
        }
        dnnl_primitive_attr_destroy(attr)
        dnnl_post_ops_destroy(po)
    }

    func pack(_ w: Tensor) -> DNNLMemory { prim.packWeights(w.rawPointer, user: userWeightDesc) }

    func run(x: UnsafeMutableRawPointer, weights: DNNLMemory, y: UnsafeMutableRawPointer) {
        windows.execute(prim, [x, y], fixed: [(DNNL_ARG_WEIGHTS, weights), (DNNL_ARG_BIAS, scaledBias)])
    }

    var implementation: String { prim.implementation }
}

/// A linear layer with int8 weights: the input is quantized to uint8 (with fixed parameters, or per batch from its
/// own range when none are given — PyTorch's dynamic quantization), multiplied as u8·s8 in int32 by oneDNN,
/// and returned as float32 `x Wᵀ + b`.
public final class Int8Linear: @unchecked Sendable {
    /// int8 `[out, in]`.
    public let weight: Tensor
    /// float32 `[out]`.
    public let weightScales: Tensor
    public let bias: Tensor?
    /// Fixed input quantization (static), or nil to quantize each batch over its own range (dynamic).
    public let input: QParams?
    /// `Σₖ weight[o, k]`, to remove the input's zero point after the product.
    private let rowSums: [Int32]
    /// Kernel and packed weights per batch size.
    private var kernels: [Int: (kernel: Int8ConvKernel, weights: DNNLMemory)] = [:]
    private let lock = Mutex()
    private let asConv: Int8Conv
    /// See ``Int8Conv/kernelQMax``.
    public let kernelQMax: Int32

    public init(
        weight: Tensor, weightScales: Tensor, bias: Tensor?, input: QParams?,
        kernelQMax: Int32 = Quantization.activationQMax
    ) {
        require(
            weight.dtype == .int8 && weight.rank == 2 && weightScales.dtype == .float32
                && weightScales.shape == [weight.shape[0]]
                && (bias.map { $0.dtype == .float32 && $0.shape == [weight.shape[0]] } ?? true),
            """
            Int8Linear: int8 weight [out, in] with float32 scales and bias [out] expected, got \(weight.dtype) \
            \(weight.shape), \(weightScales.shape), \(bias?.shape ?? [])
            """
        )
        self.weight = weight.contiguous()
        self.weightScales = weightScales.contiguous()
        self.bias = bias?.contiguous()
        self.input = input
        self.kernelQMax = kernelQMax
        let (o, k) = (weight.shape[0], weight.shape[1])
        let pw = self.weight.pointer(Int8.self)
        rowSums = (0..<o).map { r in (0..<k).reduce(Int32(0)) { $0 + Int32(pw[r * k + $1]) } }
        // The product runs as a 1×1 convolution with unit output scale and no zero point (a float32 destination
        // is described by an identity requantization below).
        asConv = Int8Conv(
            weight: self.weight.reshape([o, k, 1, 1]), weightScales: self.weightScales, bias: Tensor.zeros([o]),
            stride: 1, padding: 0, input: QParams(scale: 1, zeroPoint: 0, qmax: 255)!,
            output: QParams(scale: 1, zeroPoint: 0, qmax: 255)!)
    }

    /// `x Wᵀ + b` for float32 `x [N, in]`. Fixed input codes wider than this host's int8 kernels take
    /// (``Int8Conv/kernelQMax``) are multiplied in float32 after dequantization.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        require(
            x.dtype == .float32 && x.rank == 2 && x.shape[1] == weight.shape[1],
            "Int8Linear: expected float32 [N, \(weight.shape[1])] input, got \(x.dtype) \(x.shape)")
        let qp = input ?? Self.dynamicParams(x)
        let q = x.quantized(qp)
        if qp.qmax > kernelQMax {
            return q.dequantized(qp).linear(
                weight: weight.to(.float32) * weightScales.reshape([-1, 1]), bias: bias,
                precision: .float32)
        }
        let (n, o) = (x.shape[0], weight.shape[0])
        let kernel = lock.withLock { () -> (Int8ConvKernel, DNNLMemory) in
            if let k = kernels[n] { return k }
            let g = ConvGeometry(
                n: n, c: weight.shape[1], h: 1, w: 1, oc: o, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, groups: 1)
            let k = Int8ConvKernel(g, asConv, floatOutput: true)
            kernels[n] = (k, k.pack(asConv.weight))
            return kernels[n]!
        }
        let acc = Tensor(empty: [n, o], dtype: .float32)
        kernel.0.run(x: q.rawPointer, weights: kernel.1, y: acc.rawPointer)
        // acc = s_w · Σ q·w; real = s_x · (acc − zp · s_w · Σ w) + b.
        let pa = acc.pointer(Float.self), ws = weightScales.pointer(Float.self), pb = bias?.pointer(Float.self)
        let s = qp.scale, zp = Float(qp.zeroPoint)
        for i in 0..<n {
            for j in 0..<o { pa[i * o + j] = s * (pa[i * o + j] - zp * ws[j] * Float(rowSums[j])) + (pb?[j] ?? 0) }
        }
        return acc
    }

    /// The batch's own range (PyTorch's dynamic quantization: min-max, 7 bits without VNNI).
    static func dynamicParams(_ x: Tensor) -> QParams {
        let v = x.contiguous().floats
        let lo = v.min() ?? 0, hi = v.max() ?? 0
        guard lo.isFinite && hi.isFinite else {
            return QParams(scale: 1, zeroPoint: 0, qmax: Quantization.activationQMax)!
        }
        return QParams(min: lo, max: hi, qmax: Quantization.activationQMax)
    }
}

/// Rows `rows` (batch item × output row) of a uint8 pool, channels-last; a free function, which the optimizer
/// compiles with specialised loops (inside the parallel closure they went through generic range witnesses).
private func quantizedPoolRows(
    _ rows: Range<Int>, _ px: UnsafeMutablePointer<UInt8>, _ py: UnsafeMutablePointer<UInt8>,
    c: Int, h: Int, w: Int, _ ah: PoolAxis, _ aw: PoolAxis, max: Bool, zeroPoint: Int32
) {
    let acc = UnsafeMutablePointer<Int32>.allocate(capacity: c)
    defer { acc.deallocate() }
    for r in rows {
        let b = r / ah.count, i = r % ah.count
        for j in 0..<aw.count {
            let o = py + ((b * ah.count + i) * aw.count + j) * c
            if !max && ah.end[i] - ah.start[i] == 2 && aw.end[j] - aw.start[j] == 2 && ah.size[i] * aw.size[j] == 4 {
                // A full 2×2 window (fastai's ResBlock shortcut pool): one pass, the same rounding as below.
                let p00 = px + ((b * h + ah.start[i]) * w + aw.start[j]) * c, p01 = p00 + c, p10 = p00 + w * c,
                    p11 = p10 + c
                for ch in 0..<c {
                    let sum = Int32(p00[ch]) &+ Int32(p01[ch]) &+ Int32(p10[ch]) &+ Int32(p11[ch])
                    let v = Float(sum) * 0.25 + 12_582_912  // exact: a power of two
                    o[ch] = UInt8(truncatingIfNeeded: Int32(bitPattern: v.bitPattern) &- 0x4B40_0000)
                }
                continue
            }
            acc.initialize(repeating: 0, count: c)
            for hh in ah.start[i]..<ah.end[i] {
                for ww in aw.start[j]..<aw.end[j] {
                    let p = px + ((b * h + hh) * w + ww) * c
                    if max {
                        for ch in 0..<c { acc[ch] = Swift.max(acc[ch], Int32(p[ch])) }
                    } else {
                        for ch in 0..<c { acc[ch] &+= Int32(p[ch]) }
                    }
                }
            }
            if max {
                for ch in 0..<c { o[ch] = UInt8(truncatingIfNeeded: acc[ch]) }
            } else {
                // Padding positions hold the real value 0, i.e. the code `zeroPoint`.
                let inside = (ah.end[i] - ah.start[i]) * (aw.end[j] - aw.start[j])
                let size = ah.size[i] * aw.size[j], pad = Int32(size - inside) * zeroPoint
                // The mean rounded half to even: a quotient of two exact integers is correctly rounded, so it lands
                // on a half exactly when the true mean does; adding 1.5·2²³ rounds it to an integer in the mantissa
                // (the current rounding mode, to nearest even), read without a checked conversion.
                let d = Float(size)
                for ch in 0..<c {
                    let v = Float(acc[ch] &+ pad) / d + 12_582_912
                    o[ch] = UInt8(truncatingIfNeeded: Swift.min(Int32(bitPattern: v.bitPattern) &- 0x4B40_0000, 255))
                }
            }
        }
    }
}
