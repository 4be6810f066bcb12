// Convolution over a tiny feature map as one dense matrix product.
//
// A channels-last `[N, H, W, C]` input is already an `[N, H·W·C]` matrix and a convolution is a linear
// map to `[N, OH·OW·OC]` (also channels-last). When the input has no more positions than the kernel has
// taps (H·W ≤ KH·KW, e.g. the 2×2 maps at the end of the Fashion-MNIST ResNet), multiplying by that dense
// map costs at most the nominal convolution FLOPs (padding taps are never computed); on slightly larger
// maps it costs up to twice as much but still wins, because oneDNN 2.6's direct kernels manage only
// 15–80 GFLOP/s on such tiny outputs while the product runs at GEMM speed.

/// One convolution geometry expressed as a dense `[H·W·C, OH·OW·OC]` map.
struct UnrolledConv {
    let g: ConvGeometry
    /// (input position, output position, kernel row, kernel column) for every tap that touches data.
    let taps: [(p: Int, q: Int, kh: Int, kw: Int)]

    /// Whether this geometry is cheaper as a dense product: maps with no more positions than kernel taps, and
    /// 4×4 maps reduced to 2×2 (measured forward + backward on the development machine: 256→256 252 → 190 ms,
    /// 128→128 62 → 46 ms at batch 1024; 4×4 stride-1 and 7×7 maps were slower dense, 78 → 97 and 41 → 147 ms).
    static func applies(_ g: ConvGeometry) -> Bool {
        g.groups == 1 && (g.h * g.w <= g.kh * g.kw || (g.h * g.w <= 16 && g.oh * g.ow <= 4))
    }

    init(_ g: ConvGeometry) {
        self.g = g
        var t: [(Int, Int, Int, Int)] = []
        for oh in 0..<g.oh { for ow in 0..<g.ow {
            for h in 0..<g.h { for w in 0..<g.w {
                let kh = h - oh * g.sh + g.ph, kw = w - ow * g.sw + g.pw
                if kh >= 0 && kh < g.kh && kw >= 0 && kw < g.kw { t.append((h * g.w + w, oh * g.ow + ow, kh, kw)) }
            } }
        } }
        taps = t
    }

    var inFeatures: Int { g.h * g.w * g.c }
    var outFeatures: Int { g.oh * g.ow * g.oc }

    /// The dense map `D[(p·C + c), (q·OC + o)] = W[o, c, kh, kw]` from contiguous OIHW weights.
    func denseWeight(_ w: Tensor) -> Tensor {
        let d = Tensor.zeros([inFeatures, outFeatures])
        let pw = w.pointer(Float.self), pd = d.pointer(Float.self)
        let kk = g.kh * g.kw, outF = outFeatures
        for t in taps {
            for c in 0..<g.c {
                let row = pd + (t.p * g.c + c) * outF + t.q * g.oc
                let src = pw + c * kk + t.kh * g.kw + t.kw
                for o in 0..<g.oc { row[o] = src[o * g.c * kk] }
            }
        }
        return d
    }

    /// y = x·D (+ bias), channels-last in and out.
    func forward(_ x: Tensor, _ d: Tensor, bias: Tensor?) -> Tensor {
        let y = Tensor(empty: [g.n, g.oc, g.oh, g.ow], dtype: .float32, strides: Tensor.channelsLastStrides([g.n, g.oc, g.oh, g.ow]))
        if let bias {
            let pb = bias.pointer(Float.self), py = y.pointer(Float.self)
            for r in 0..<(g.n * g.oh * g.ow) { (py + r * g.oc).update(from: pb, count: g.oc) }
        }
        Tensor.gemm(.float32, m: g.n, n: outFeatures, k: inFeatures,
                    GemmOperand(base: x.rawPointer, transposed: false, ld: inFeatures),
                    GemmOperand(base: d.rawPointer, transposed: false, ld: outFeatures),
                    beta: bias == nil ? 0 : 1, y.rawPointer, ldc: outFeatures)
        return y
    }

    /// dx = dy·Dᵀ (channels-last).
    func backwardData(_ dy: Tensor, _ d: Tensor) -> Tensor {
        let dx = Tensor(empty: [g.n, g.c, g.h, g.w], dtype: .float32, strides: Tensor.channelsLastStrides([g.n, g.c, g.h, g.w]))
        Tensor.gemm(.float32, m: g.n, n: inFeatures, k: outFeatures,
                    GemmOperand(base: dy.rawPointer, transposed: false, ld: outFeatures),
                    GemmOperand(base: d.rawPointer, transposed: true, ld: outFeatures),
                    beta: 0, dx.rawPointer, ldc: inFeatures)
        return dx
    }

    /// dW (contiguous OIHW) folded from dD = xᵀ·dy.
    func backwardWeights(_ x: Tensor, _ dy: Tensor) -> Tensor {
        let dd = Tensor(empty: [inFeatures, outFeatures], dtype: .float32)
        Tensor.gemm(.float32, m: inFeatures, n: outFeatures, k: g.n,
                    GemmOperand(base: x.rawPointer, transposed: true, ld: inFeatures),
                    GemmOperand(base: dy.rawPointer, transposed: false, ld: outFeatures),
                    beta: 0, dd.rawPointer, ldc: outFeatures)
        let dw = Tensor.zeros([g.oc, g.c, g.kh, g.kw])
        let pw = dw.pointer(Float.self), pd = dd.pointer(Float.self)
        let kk = g.kh * g.kw, outF = outFeatures
        for t in taps {
            for c in 0..<g.c {
                let row = pd + (t.p * g.c + c) * outF + t.q * g.oc
                let dst = pw + c * kk + t.kh * g.kw + t.kw
                for o in 0..<g.oc { dst[o * g.c * kk] += row[o] }
            }
        }
        return dw
    }
}
