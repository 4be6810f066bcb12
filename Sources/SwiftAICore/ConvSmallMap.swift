// Convolution over small feature maps as a set of GEMMs over the batch, one per (output position, input row).
//
// On small maps (the 7×7 … 1×1 maps of the Fashion-MNIST ResNets) oneDNN 2.6's direct AVX2 kernels manage
// only 15–85 GFLOP/s. With channels-last data, the input pixels one output pixel sees in one
// input row are adjacent in memory, and the weights permuted to `[KH][KW][C][OC]` (HWIO) give the matching
// block of kernel taps as a contiguous `[taps·C, OC]` matrix. So each (output position, input row) pair is a
// GEMM `[N, taps·C] × [taps·C, OC]` accumulated into the output position's `[N, OC]` slice — every GEMM has
// the whole batch as its rows, no data is copied, and taps that fall on padding are never computed (a 4×4
// stride-1 map costs 100 of the nominal 144 taps).

/// One convolution geometry computed as per-position GEMMs.
struct SmallMapConv {
    let g: ConvGeometry
    /// (output position, first input offset, first tap row-major index in HWIO, taps in the row).
    let blocks: [(q: Int, inOffset: Int, tap: Int, width: Int)]

    /// Whether this geometry is computed this way. Measured forward + backward at batch 1024 against oneDNN's
    /// direct kernels on the development machine: faster on every map up to 7×7 with ≥ 16 input channels
    /// (256→256 4×4/2: 256 → 116 ms; 128→128 7×7/2: 164 → 98 ms; 32→64 7×7: 63 → 42 ms) and on 14×14 with
    /// ≥ 64 (64→64 14×14/2: 142 → 87 ms), slower on larger maps with few channels (16→32 14×14: 47 → 68 ms;
    /// 8→16 28×28: 79 → 208 ms), where each GEMM has too little depth. Batches under 16 make every GEMM a thin
    /// matrix–vector product and the per-call HWIO copy of the weights dominates: batch-1 ResNet inference at 224 px
    /// ran 3.4× slower than oneDNN's kernels this way (resnet18 102 → 30 ms, resnet50 207 → 63 ms).
    static func applies(_ g: ConvGeometry) -> Bool {
        let positions = g.h * g.w
        return g.groups == 1 && g.n >= 16
            && (positions <= 4 || (positions <= 49 && g.c >= 16) || (positions <= 196 && g.c >= 64))
    }

    init(_ g: ConvGeometry) {
        self.g = g
        var b: [(Int, Int, Int, Int)] = []
        for oh in 0..<g.oh {
            for ow in 0..<g.ow {
                let w0 = Swift.max(0, ow * g.sw - g.pw), w1 = Swift.min(g.w - 1, ow * g.sw - g.pw + g.kw - 1)
                guard w0 <= w1 else { continue }
                for ih in Swift.max(0, oh * g.sh - g.ph)...Swift.min(g.h - 1, oh * g.sh - g.ph + g.kh - 1) {
                    let kh = ih - oh * g.sh + g.ph, kw0 = w0 - ow * g.sw + g.pw
                    b.append((oh * g.ow + ow, (ih * g.w + w0) * g.c, kh * g.kw + kw0, w1 - w0 + 1))
                }
            }
        }
        blocks = b
    }

    private var inRow: Int { g.h * g.w * g.c }
    private var outRow: Int { g.oh * g.ow * g.oc }

    /// Weights permuted OIHW → HWIO (`[KH·KW·C, OC]`).
    func hwio(_ w: Tensor) -> Tensor { w.permute([2, 3, 1, 0]).contiguous() }

    /// y = conv(x, w) + bias, channels-last in and out.
    func forward(_ x: Tensor, _ w: Tensor, bias: Tensor?) -> Tensor {
        let y = Tensor.zeros([g.n, g.oc, g.oh, g.ow]).viewing(
            shape: [g.n, g.oc, g.oh, g.ow],
            strides: Tensor.channelsLastStrides([g.n, g.oc, g.oh, g.ow]), offset: 0)
        if let bias {
            let pb = bias.pointer(Float.self), py = y.pointer(Float.self)
            for r in 0..<(g.n * g.oh * g.ow) { (py + r * g.oc).update(from: pb, count: g.oc) }
        }
        accumulate(x, hwio: hwio(w), into: y)
        return y
    }

    /// y += conv(x, w) with the weights already in HWIO (``hwio(_:)``); `y` channels-last, uniquely owned.
    func accumulate(_ x: Tensor, hwio wt: Tensor, into y: Tensor) {
        for b in blocks {
            Tensor.gemm(
                .float32, m: g.n, n: g.oc, k: b.width * g.c,
                GemmOperand(base: x.rawPointer + b.inOffset * 4, transposed: false, ld: inRow),
                GemmOperand(base: wt.rawPointer + b.tap * g.c * g.oc * 4, transposed: false, ld: g.oc),
                beta: 1, y.rawPointer + b.q * g.oc * 4, ldc: outRow)
        }
    }

    /// dx = conv_backward_data(dy, w), channels-last.
    func backwardData(_ dy: Tensor, _ w: Tensor) -> Tensor {
        let wt = hwio(w)
        let shape = [g.n, g.c, g.h, g.w]
        let dx = Tensor.zeros(shape).viewing(shape: shape, strides: Tensor.channelsLastStrides(shape), offset: 0)
        for b in blocks {
            Tensor.gemm(
                .float32, m: g.n, n: b.width * g.c, k: g.oc,
                GemmOperand(base: dy.rawPointer + b.q * g.oc * 4, transposed: false, ld: outRow),
                GemmOperand(base: wt.rawPointer + b.tap * g.c * g.oc * 4, transposed: true, ld: g.oc),
                beta: 1, dx.rawPointer + b.inOffset * 4, ldc: inRow)
        }
        return dx
    }

    /// dW (contiguous OIHW) = Σ xᵀ·dy over the blocks.
    func backwardWeights(_ x: Tensor, _ dy: Tensor) -> Tensor {
        let dwt = Tensor.zeros([g.kh, g.kw, g.c, g.oc])
        for b in blocks {
            Tensor.gemm(
                .float32, m: b.width * g.c, n: g.oc, k: g.n,
                GemmOperand(base: x.rawPointer + b.inOffset * 4, transposed: true, ld: inRow),
                GemmOperand(base: dy.rawPointer + b.q * g.oc * 4, transposed: false, ld: outRow),
                beta: 1, dwt.rawPointer + b.tap * g.c * g.oc * 4, ldc: g.oc)
        }
        return dwt.permute([3, 2, 0, 1]).contiguous()
    }
}
