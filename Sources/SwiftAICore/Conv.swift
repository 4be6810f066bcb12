import CDNNL

// 2-D convolution: oneDNN for Float32, a reference loop for Float64 (gradient checks).
//
// Layout decision: activations stay **channels-last** (logical NCHW shape, NHWC strides, PyTorch's
// `channels_last`). On this machine oneDNN's convolutions run 156–265 GFLOP/s directly on NHWC with
// no reorders, while its faster-looking blocked layouts (180–280) need NCHW⇄blocked reorders that
// cost 40–80 % of a small convolution and are opaque to strided views, slicing and our own kernels.
// Plain NCHW primitives manage ~50 GFLOP/s. So a conv takes and returns channels-last tensors, and
// only the (small) weights are reordered into the blocked layout the primitive picks.

/// How a float32 convolution runs: oneDNN's kernels with operands in a precision, or the small-map GEMMs.
enum ConvPath: Equatable {
    case dnnl(DType)
    case smallMap

    /// The operand type of the products.
    var precision: DType {
        if case let .dnnl(p) = self { return p }
        return .float32
    }
}

/// Geometry of one convolution.
struct ConvGeometry: Hashable {
    let n, c, h, w, oc, kh, kw, sh, sw, ph, pw, groups: Int
    var oh: Int { (h + 2 * ph - kh) / sh + 1 }
    var ow: Int { (w + 2 * pw - kw) / sw + 1 }
    var key: String { "\(n),\(c),\(h),\(w)|\(oc),\(kh),\(kw)|\(sh),\(sw)|\(ph),\(pw)|\(groups)" }
    /// Nominal multiply-adds ×2.
    var flops: Double { 2 * Double(n * oc * oh * ow) * Double(c / groups * kh * kw) }

    /// oneDNN descriptors: channels-last source and destination, contiguous user weights (`[OC, C, KH, KW]`, or
    /// `[G, OC/G, C/G, KH, KW]` with groups), bias; float32 unless other element types are given (int8 kernels).
    func memoryDescs(
        src st: dnnl_data_type_t = dnnl_f32, weights wt: dnnl_data_type_t = dnnl_f32,
        dst dt: dnnl_data_type_t = dnnl_f32
    )
        -> (
            src: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, bias: dnnl_memory_desc_t,
            weightDims: [Int]
        )
    {
        let wDims = groups == 1 ? [oc, c, kh, kw] : [groups, oc / groups, c / groups, kh, kw]
        return (
            DNNL.desc([n, c, h, w], strides: Tensor.channelsLastStrides([n, c, h, w]), st),
            DNNL.desc([n, oc, oh, ow], strides: Tensor.channelsLastStrides([n, oc, oh, ow]), dt),
            DNNL.desc(wDims, strides: Tensor.contiguousStrides(wDims), wt), DNNL.desc([oc], strides: [1]), wDims
        )
    }

    /// A forward convolution descriptor (`kind`: training or inference) whose weights take the primitive's layout.
    func forwardDesc(
        _ kind: dnnl_prop_kind_t, bias: Bool, src st: dnnl_data_type_t = dnnl_f32,
        weights wt: dnnl_data_type_t = dnnl_f32,
        dst dt: dnnl_data_type_t = dnnl_f32
    ) -> dnnl_convolution_desc_t {
        let m = memoryDescs(src: st, weights: wt, dst: dt)
        var anyW = DNNL.desc(m.weightDims, tag: dnnl_format_tag_any, wt)
        var s = m.src, d = m.dst, b = m.bias
        var st: [Int64] = [Int64(sh), Int64(sw)], pad: [Int64] = [Int64(ph), Int64(pw)]
        var desc = dnnl_convolution_desc_t()
        withUnsafePointer(to: &b) { bp in
            DNNL.check(
                dnnl_convolution_forward_desc_init(
                    &desc, kind, dnnl_convolution_direct, &s, &anyW, bias ? bp : nil, &d,
                    &st, &pad, &pad), "conv forward desc")
        }
        return desc
    }
}

extension ConvGeometry {
    /// The geometry of an `[N, C, H, W]` input and an `[OC, C/groups, KH, KW]` weight.
    init(input x: [Int], weight w: [Int], stride: (Int, Int), padding: (Int, Int), groups: Int) {
        (n, c, h, self.w, oc, kh, kw) = (x[0], x[1], x[2], x[3], w[0], w[2], w[3])
        (sh, sw, ph, pw, self.groups) = (stride.0, stride.1, padding.0, padding.1, groups)
    }
}

/// Compiled oneDNN primitives and memory windows for one geometry.
///
/// The memory windows and reordered-weight buffers are shared state, so every pass holds the kernel's
/// lock: several threads may train models with the same shapes at once (tests do).
final class ConvKernel {
    private let lock = Mutex()
    let g: ConvGeometry
    let hasBias: Bool
    /// The products' operand type: float32, or bfloat16/float16 (mixed precision; float32 weights, outputs and
    /// gradients, with the operands cast by reorders into owned buffers).
    let precision: DType
    private let low: dnnl_data_type_t
    let srcDesc, dstDesc, userWeightDesc, biasDesc: dnnl_memory_desc_t
    /// OIHW, or GOIHW with groups.
    let weightDims: [Int]
    let fwd: DNNLPrimitive
    private let fwdWeightReorder: DNNLPrimitive?
    private let fwdWeights: DNNLMemory
    private let src, dst, userWeights, bias: DNNLMemory
    /// In low precision: the windows the low-precision source and output gradient are bound to (the callers cast
    /// them into tensors of their own: no buffer per geometry stays allocated).
    private let lowSrc, lowDst: DNNLMemory?

    init(_ g: ConvGeometry, hasBias: Bool, precision: DType = .float32) {
        self.g = g
        self.hasBias = hasBias
        self.precision = precision
        low = LowPrecision.dnnlType(precision)
        let m = g.memoryDescs()
        (srcDesc, dstDesc, userWeightDesc, biasDesc, weightDims) = (m.src, m.dst, m.weights, m.bias, m.weightDims)
        let lowDescs = g.memoryDescs(src: low, dst: low)
        (lowSrc, lowDst) = precision == .float32 ? (nil, nil) : (DNNLMemory(lowDescs.src), DNNLMemory(lowDescs.dst))
        var desc = g.forwardDesc(dnnl_forward_training, bias: hasBias, src: low, weights: low)
        fwd = DNNLPrimitive(&desc, "conv forward")
        let wmd = fwd.md(dnnl_query_weights_md)
        fwdWeightReorder = DNNL.equal(wmd, userWeightDesc) ? nil : DNNLPrimitive(reorderFrom: userWeightDesc, to: wmd)
        userWeights = DNNLMemory(userWeightDesc)
        fwdWeights = fwdWeightReorder == nil ? userWeights : DNNLMemory(wmd, owned: true)
        src = DNNLMemory(srcDesc)
        dst = DNNLMemory(dstDesc)
        bias = DNNLMemory(biasDesc)
    }

    /// The source as the primitives read it: float32, or (low precision) already cast by ``cast(_:)``.
    private func source(_ p: UnsafeMutableRawPointer) -> DNNLMemory { (lowSrc ?? src).bind(p) }

    /// The output gradient as the primitives read it: float32, or already cast.
    private func gradient(_ p: UnsafeMutableRawPointer) -> DNNLMemory { (lowDst ?? dst).bind(p) }

    /// A channels-last float32 activation (the input; the output gradient) in the kernel's precision: the forward
    /// reads the cast input and the backward pass keeps it (half the memory of the float32 input).
    func cast(_ x: Tensor) -> Tensor { x.to(precision) }

    /// y = conv(x, w) + b; all pointers to channels-last activations (`x` in the kernel's precision) / contiguous
    /// float32 weights.
    func forward(
        x: UnsafeMutableRawPointer, w: UnsafeMutableRawPointer, b: UnsafeMutableRawPointer?,
        y: UnsafeMutableRawPointer
    ) {
        lock.lock(); defer { lock.unlock() }
        userWeights.bind(w)
        if let r = fwdWeightReorder { r.execute([(DNNL_ARG_FROM, userWeights), (DNNL_ARG_TO, fwdWeights)]) }
        var args: [(Int32, DNNLMemory)] = [
            (DNNL_ARG_SRC, source(x)), (DNNL_ARG_WEIGHTS, fwdWeights),
            (DNNL_ARG_DST, dst.bind(y))
        ]
        if let b { args.append((DNNL_ARG_BIAS, bias.bind(b))) }
        fwd.execute(args)
    }

    private lazy var bwdData: (prim: DNNLPrimitive, reorder: DNNLPrimitive?, weights: DNNLMemory) = {
        var s = srcDesc, d = g.memoryDescs(dst: low).dst
        var anyW = DNNL.desc(weightDims, tag: dnnl_format_tag_any, low)
        var st: [Int64] = [Int64(g.sh), Int64(g.sw)], pad: [Int64] = [Int64(g.ph), Int64(g.pw)]
        var desc = dnnl_convolution_desc_t()
        DNNL.check(
            dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &s, &anyW, &d, &st, &pad, &pad),
            "conv bwd-data desc")
        let p = DNNLPrimitive(&desc, hint: fwd.pd, "conv backward-data")
        let wmd = p.md(dnnl_query_weights_md)
        let r = DNNL.equal(wmd, userWeightDesc) ? nil : DNNLPrimitive(reorderFrom: userWeightDesc, to: wmd)
        return (p, r, r == nil ? userWeights : DNNLMemory(wmd, owned: true))
    }()

    /// dx = conv_backward_data(dy, w); `dy` in the kernel's precision.
    func backwardData(dy: UnsafeMutableRawPointer, w: UnsafeMutableRawPointer, dx: UnsafeMutableRawPointer) {
        lock.lock(); defer { lock.unlock() }
        let k = bwdData
        userWeights.bind(w)
        if let r = k.reorder { r.execute([(DNNL_ARG_FROM, userWeights), (DNNL_ARG_TO, k.weights)]) }
        k.prim.execute([
            (DNNL_ARG_DIFF_DST, gradient(dy)), (DNNL_ARG_WEIGHTS, k.weights),
            (DNNL_ARG_DIFF_SRC, src.bind(dx))
        ])
    }

    private lazy var bwdWeights: (prim: DNNLPrimitive, reorder: DNNLPrimitive?, diffWeights: DNNLMemory) = {
        let a = g.memoryDescs(src: low, dst: low)
        var s = a.src, d = a.dst, b = biasDesc
        var anyW = DNNL.desc(weightDims, tag: dnnl_format_tag_any)
        var st: [Int64] = [Int64(g.sh), Int64(g.sw)], pad: [Int64] = [Int64(g.ph), Int64(g.pw)]
        var desc = dnnl_convolution_desc_t()
        withUnsafePointer(to: &b) { bp in
            DNNL.check(
                dnnl_convolution_backward_weights_desc_init(
                    &desc, dnnl_convolution_direct, &s, &anyW, hasBias ? bp : nil,
                    &d, &st, &pad, &pad), "conv bwd-weights desc")
        }
        let p = DNNLPrimitive(&desc, hint: fwd.pd, "conv backward-weights")
        let wmd = p.md(dnnl_query_diff_weights_md)
        let r = DNNL.equal(wmd, userWeightDesc) ? nil : DNNLPrimitive(reorderFrom: wmd, to: userWeightDesc)
        return (p, r, r == nil ? userWeights : DNNLMemory(wmd, owned: true))
    }()

    /// dw (contiguous OIHW) and db from x and dy (both in the kernel's precision).
    func backwardWeights(
        x: UnsafeMutableRawPointer, dy: UnsafeMutableRawPointer, dw: UnsafeMutableRawPointer,
        db: UnsafeMutableRawPointer?
    ) {
        lock.lock(); defer { lock.unlock() }
        let k = bwdWeights
        userWeights.bind(dw)
        var args: [(Int32, DNNLMemory)] = [
            (DNNL_ARG_SRC, source(x)), (DNNL_ARG_DIFF_DST, gradient(dy)),
            (DNNL_ARG_DIFF_WEIGHTS, k.diffWeights)
        ]
        if let db { args.append((DNNL_ARG_DIFF_BIAS, bias.bind(db))) }
        k.prim.execute(args)
        if let r = k.reorder { r.execute([(DNNL_ARG_FROM, k.diffWeights), (DNNL_ARG_TO, userWeights)]) }
    }

    static let cache = KernelCache<ConvKernel>()

    static func get(_ g: ConvGeometry, hasBias: Bool, precision: DType = .float32) -> ConvKernel {
        cache.get(g.key + (hasBias ? "|b" : "") + (precision == .float32 ? "" : "|\(precision)")) {
            ConvKernel(g, hasBias: hasBias, precision: precision)
        }
    }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch): input `[N, C, H, W]`, weight `[OC, C/groups, KH, KW]`.
    /// Float32 results are channels-last.
    ///
    /// `precision` (default: ``Autocast/precision``) `.bfloat16` or `.float16` (float32 operands only): forward and
    /// backward take the input, weight and output gradient rounded to that type and accumulate in float32; result
    /// and gradients stay float32. Check ``CPUFeatures/lowPrecisionUnavailable(_:)`` first.
    public func conv2d(
        weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, groups: Int = 1,
        precision: DType? = nil
    ) -> Tensor {
        conv2d(
            weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding), groups: groups,
            precision: precision)
    }

    /// 2-D convolution with separate vertical and horizontal stride and padding.
    public func conv2d(
        weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int), groups: Int = 1,
        precision: DType? = nil
    ) -> Tensor {
        requireCompute("conv2d")
        require(rank == 4, "conv2d: expected 4-D input [N, C, H, W], got shape \(shape)")
        require(weight.rank == 4, "conv2d: expected 4-D weight [OC, C/groups, KH, KW], got shape \(weight.shape)")
        require(
            weight.dtype == dtype && (bias?.dtype ?? dtype) == dtype,
            "conv2d: input (\(dtype)), weight (\(weight.dtype)) and bias should have the same dtype")
        require(
            groups >= 1 && shape[1] % groups == 0 && weight.shape[0] % groups == 0,
            "conv2d: channels \(shape[1]) and out channels \(weight.shape[0]) must be divisible by groups \(groups)")
        require(
            weight.shape[1] * groups == shape[1],
            """
            conv2d: given groups=\(groups), weight of size \(weight.shape), expected input \(shape) to have \
            \(weight.shape[1] * groups) channels, but got \(shape[1]) channels instead
            """
        )
        if let bias {
            require(bias.shape == [weight.shape[0]], "conv2d: bias shape \(bias.shape) should be [\(weight.shape[0])]")
        }
        let g = ConvGeometry(input: shape, weight: weight.shape, stride: stride, padding: padding, groups: groups)
        require(
            stride.0 > 0 && stride.1 > 0 && padding.0 >= 0 && padding.1 >= 0,
            "conv2d: invalid stride \(stride) or padding \(padding)")
        require(
            g.oh > 0 && g.ow > 0,
            """
            conv2d: calculated output size (\(g.oh)x\(g.ow)) is too small for input \(shape) and kernel \
            \(weight.shape) with padding \(padding)
            """
        )
        let low = dtype == .float32 ? precision ?? Autocast.precision : .float32
        if low != .float32 && LowPrecision.kernels(low, "conv2d") == .reference {
            return LowPrecision.reference(self, weight, bias, low) {
                $0.conv2d(weight: $1, bias: $2, stride: stride, padding: padding, groups: groups, precision: .float32)
            }
        }
        let x = detached(), w = weight.detached().contiguous(), b = bias?.detached().contiguous()
        let y: Tensor, saved: SavedActivation
        var path = ConvPath.dnnl(.float32)
        if dtype == .float32 {
            let xc = x.contiguous(.channelsLast)
            // The path (low precision, float32 kernels, small-map GEMMs) that is fastest here for this geometry.
            // An explicit `precision` is obeyed; under autocast, low precision only where it measured faster.
            let on = GradMode.isEnabled
            let grad = (x: on && node != nil, w: on && weight.node != nil, b: on && bias?.node != nil)
            path = precision != nil && low != .float32 ? .dnnl(low) : Tensor.convPath(g, xc, w, b, low, grad: grad)
            // The activations after a low-precision convolution are saved in bfloat16, until the next convolution.
            Autocast.scope?.lowPrecisionActivations = path.precision != .float32
            let source: Tensor
            (y, source) = Tensor.convForward(xc, w, b, g, path)
            saved = path.precision == .float32 ? SavedActivation(source) : SavedActivation(exactly: source)
        } else {
            y = Tensor.referenceConv(x.contiguous(), w, b, g)
            saved = SavedActivation(exactly: x.contiguous())
        }
        var out = y
        let inputs = [self, weight] + (bias.map { [$0] } ?? [])
        if inputs.contains(where: { $0.node != nil }) && GradMode.isEnabled {
            let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
            out.recordGrad("conv2d", inputs) { gy in
                let (dx, dw, db) = Tensor.convBackward(
                    saved.tensor, w, gy, g, needX: needX, needW: needW, needB: needB,
                    path: path)
                return bias == nil ? [dx, dw] : [dx, dw, db]
            }
        }
        return out
    }

    /// The forward convolution of the channels-last float32 `xc` on `path`: the output and the source the backward
    /// pass needs (`xc`, or its low-precision cast).
    static func convForward(
        _ xc: Tensor, _ w: Tensor, _ b: Tensor?, _ g: ConvGeometry,
        _ path: ConvPath
    ) -> (Tensor, Tensor) {
        if path == .smallMap { return (SmallMapConv(g).forward(xc, w, bias: b), xc) }
        let k = ConvKernel.get(g, hasBias: b != nil, precision: path.precision)
        let source = path.precision == .float32 ? xc : k.cast(xc)
        let outShape = [g.n, g.oc, g.oh, g.ow]
        let y = Tensor(empty: outShape, dtype: .float32, strides: Tensor.channelsLastStrides(outShape))
        k.forward(x: source.rawPointer, w: w.rawPointer, b: b?.rawPointer, y: y.rawPointer)
        return (y, source)
    }

    /// What a training path is chosen for: the geometry, the bias, the autocast precision and the gradients needed.
    private struct PathKey: Hashable {
        let g: ConvGeometry, bias: Bool, low: DType, gx: Bool, gw: Bool, gb: Bool
    }

    private static let pathChoice = PathChoice<PathKey>("conv.train", rounds: 2)

    /// The fastest way on this CPU to run a convolution of geometry `g` (forward, and the backward passes of the
    /// gradients in `grad`; timed once per geometry and gradients, on the first batch's data): oneDNN's kernels with
    /// `low` operands (under ``Autocast``) or float32 ones, or the small-map GEMMs where ``SmallMapConv/applies(_:)``
    /// admits them. Low precision does not always pay for its casts, nor the GEMMs on every ISA (BENCHMARKS.md). The
    /// low-precision candidate is charged what it switches on downstream: BatchNorm's and the activation's saved
    /// inputs, each the output's size, cast to bfloat16 and back (``SavedActivation``).
    static func convPath(
        _ g: ConvGeometry, _ xc: Tensor, _ w: Tensor, _ b: Tensor?, _ low: DType,
        grad: (x: Bool, w: Bool, b: Bool)
    ) -> ConvPath {
        var options: [ConvPath] = low == .float32 ? [] : [.dnnl(low)]
        if SmallMapConv.applies(g) { options.append(.smallMap) }
        options.append(.dnnl(.float32))
        guard options.count > 1 else { return options[0] }
        let key = PathKey(g: g, bias: b != nil, low: low, gx: grad.x, gw: grad.w, gb: grad.b)
        return options[
            pathChoice.choose(key, count: options.count) { i in
                let (y, source) = convForward(xc, w, b, g, options[i])
                if grad.x || grad.w || grad.b {
                    _ = convBackward(source, w, y, g, needX: grad.x, needW: grad.w, needB: grad.b, path: options[i])
                }
                if options[i].precision == .bfloat16 { for _ in 0..<2 { _ = y.to(.bfloat16).to(.float32) } }
            }]
    }

    /// Gradient of `conv2d` with respect to its input (PyTorch's `torch.nn.grad.conv2d_input`).
    public static func conv2dInputGrad(
        gradOutput: Tensor, weight: Tensor, inputShape: [Int], stride: Int = 1,
        padding: Int = 0, groups: Int = 1
    ) -> Tensor {
        let g = ConvGeometry(
            input: inputShape, weight: weight.shape, stride: (stride, stride), padding: (padding, padding),
            groups: groups)
        require(
            gradOutput.shape == [g.n, g.oc, g.oh, g.ow],
            "conv2d_input: grad_output \(gradOutput.shape) does not match [\(g.n), \(g.oc), \(g.oh), \(g.ow)]")
        let like = Tensor(
            empty: inputShape, dtype: gradOutput.dtype,
            strides: gradOutput.dtype == .float32 ? channelsLastStrides(inputShape) : nil)
        return convBackward(
            like, weight.detached().contiguous(), gradOutput.detached(), g, needX: true, needW: false,
            needB: false, path: SmallMapConv.applies(g) ? .smallMap : .dnnl(.float32)
        ).0!
    }

    /// Gradient of `conv2d` with respect to its weight (PyTorch's `torch.nn.grad.conv2d_weight`).
    public static func conv2dWeightGrad(
        input: Tensor, gradOutput: Tensor, weightShape: [Int], stride: Int = 1,
        padding: Int = 0, groups: Int = 1
    ) -> Tensor {
        let g = ConvGeometry(
            input: input.shape, weight: weightShape, stride: (stride, stride), padding: (padding, padding),
            groups: groups)
        require(
            gradOutput.shape == [g.n, g.oc, g.oh, g.ow],
            "conv2d_weight: grad_output \(gradOutput.shape) does not match [\(g.n), \(g.oc), \(g.oh), \(g.ow)]")
        let x = input.detached()
        let saved = x.dtype == .float32 ? x.contiguous(.channelsLast) : x.contiguous()
        return convBackward(
            saved, Tensor(empty: weightShape, dtype: x.dtype), gradOutput.detached(), g, needX: false,
            needW: true, needB: false, path: SmallMapConv.applies(g) ? .smallMap : .dnnl(.float32)
        ).1!
    }

    static func convBackward(
        _ x: Tensor, _ w: Tensor, _ gy: Tensor, _ g: ConvGeometry, needX: Bool, needW: Bool,
        needB: Bool, path: ConvPath
    ) -> (Tensor?, Tensor?, Tensor?) {
        if x.dtype == .float64 {
            return referenceConvBackward(x, w, gy.contiguous(), g, needX: needX, needW: needW, needB: needB)
        }
        let dy = gy.contiguous(.channelsLast)
        let precision = path.precision
        if path == .smallMap {
            let s = SmallMapConv(g)
            return (
                needX ? s.backwardData(dy, w) : nil, needW ? s.backwardWeights(x, dy) : nil,
                needB ? dy.sum(dims: [0, 2, 3]) : nil
            )
        }
        let k = ConvKernel.get(g, hasBias: needB, precision: precision)
        let dyk = precision == .float32 ? dy : k.cast(dy)  // one cast for both passes
        var dx: Tensor? = nil, dw: Tensor? = nil, db: Tensor? = nil
        if needX {
            let t = Tensor(empty: x.shape, dtype: .float32, strides: Tensor.channelsLastStrides(x.shape))
            k.backwardData(dy: dyk.rawPointer, w: w.rawPointer, dx: t.rawPointer)
            dx = t
        }
        if needW || needB {
            let tw = Tensor(empty: w.shape, dtype: .float32)
            let tb = needB ? Tensor(empty: [g.oc], dtype: .float32) : nil
            k.backwardWeights(x: x.rawPointer, dy: dyk.rawPointer, dw: tw.rawPointer, db: tb?.rawPointer)
            dw = needW ? tw : nil
            db = tb
        }
        withExtendedLifetime((dyk, x)) {}
        return (dx, dw, db)
    }

    /// Direct convolution on contiguous NCHW tensors (Float64 path).
    static func referenceConv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, _ g: ConvGeometry) -> Tensor {
        let out = Tensor.zeros([g.n, g.oc, g.oh, g.ow], dtype: .float64)
        let px = x.pointer(Double.self), pw = w.pointer(Double.self), po = out.pointer(Double.self)
        let bv = b?.doubles
        let cg = g.c / g.groups, og = g.oc / g.groups
        for n in 0..<g.n {
            for o in 0..<g.oc {
                let grp = o / og
                for i in 0..<g.oh {
                    for j in 0..<g.ow {
                        var acc = bv?[o] ?? 0
                        for c in 0..<cg {
                            let ci = grp * cg + c
                            for ki in 0..<g.kh {
                                let yi = i * g.sh - g.ph + ki
                                if yi < 0 || yi >= g.h { continue }
                                for kj in 0..<g.kw {
                                    let xj = j * g.sw - g.pw + kj
                                    if xj < 0 || xj >= g.w { continue }
                                    acc +=
                                        px[((n * g.c + ci) * g.h + yi) * g.w + xj]
                                        * pw[((o * cg + c) * g.kh + ki) * g.kw + kj]
                                }
                            }
                        }
                        po[((n * g.oc + o) * g.oh + i) * g.ow + j] = acc
                    }
                }
            }
        }
        return out
    }

    static func referenceConvBackward(
        _ x: Tensor, _ w: Tensor, _ gy: Tensor, _ g: ConvGeometry, needX: Bool,
        needW: Bool, needB: Bool
    ) -> (Tensor?, Tensor?, Tensor?) {
        let dx = Tensor.zeros(x.shape, dtype: .float64), dw = Tensor.zeros(w.shape, dtype: .float64)
        let px = x.pointer(Double.self), pw = w.pointer(Double.self), pg = gy.pointer(Double.self)
        let pdx = dx.pointer(Double.self), pdw = dw.pointer(Double.self)
        let cg = g.c / g.groups, og = g.oc / g.groups
        for n in 0..<g.n {
            for o in 0..<g.oc {
                let grp = o / og
                for i in 0..<g.oh {
                    for j in 0..<g.ow {
                        let gv = pg[((n * g.oc + o) * g.oh + i) * g.ow + j]
                        for c in 0..<cg {
                            let ci = grp * cg + c
                            for ki in 0..<g.kh {
                                let yi = i * g.sh - g.ph + ki
                                if yi < 0 || yi >= g.h { continue }
                                for kj in 0..<g.kw {
                                    let xj = j * g.sw - g.pw + kj
                                    if xj < 0 || xj >= g.w { continue }
                                    let xo = ((n * g.c + ci) * g.h + yi) * g.w + xj,
                                        wo = ((o * cg + c) * g.kh + ki) * g.kw + kj
                                    pdx[xo] += gv * pw[wo]
                                    pdw[wo] += gv * px[xo]
                                }
                            }
                        }
                    }
                }
            }
        }
        return (needX ? dx : nil, needW ? dw : nil, needB ? gy.sum(dims: [0, 2, 3]) : nil)
    }
}
