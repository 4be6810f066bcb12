// Average, max and adaptive pooling over 4-D tensors in any layout (channels-last runs vectorised
// along channels).

/// Pooling windows along one axis: clipped bounds and the size used as divisor.
struct PoolAxis {
    var start: [Int] = [], end: [Int] = [], size: [Int] = []
    var count: Int { start.count }

    /// PyTorch's output length for `kernel`/`stride`/`padding`, with `ceilMode`.
    static func outputLength(_ n: Int, kernel k: Int, stride s: Int, padding p: Int, ceilMode: Bool) -> Int {
        var out = (n + 2 * p - (k - 1) - 1 + (ceilMode ? s - 1 : 0)) / s + 1
        if ceilMode && (out - 1) * s >= n + p { out -= 1 }
        return out
    }

    /// Windows of a fixed-kernel pool; `size` counts padding when `includePad` (PyTorch's divisor).
    init(length n: Int, kernel k: Int, stride s: Int, padding p: Int, ceilMode: Bool, includePad: Bool) {
        let count = PoolAxis.outputLength(n, kernel: k, stride: s, padding: p, ceilMode: ceilMode)
        start.reserveCapacity(count); end.reserveCapacity(count); size.reserveCapacity(count)
        for o in 0..<count {
            let lo = o * s - p, hi = Swift.min(lo + k, n + p)
            let cl = Swift.max(lo, 0), ch = Swift.min(hi, n)
            start.append(cl); end.append(ch); size.append(includePad ? hi - lo : ch - cl)
        }
    }

    /// Windows of an adaptive pool producing `out` positions.
    init(length n: Int, adaptive out: Int) {
        for o in 0..<out {
            let lo = (o * n) / out, hi = ((o + 1) * n + out - 1) / out
            start.append(lo); end.append(hi); size.append(hi - lo)
        }
    }
}

extension Tensor {
    /// 2-D average pooling (PyTorch's `avg_pool2d`; `stride` defaults to `kernel`).
    public func avgPool2d(
        kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
        countIncludePad: Bool = true
    ) -> Tensor {
        require(rank == 4, "avg_pool2d: expected 4-D input [N, C, H, W], got \(shape)")
        require(
            padding <= kernel / 2,
            """
            avg_pool2d: pad should be at most half of effective kernel size, got padding \(padding) for kernel \
            \(kernel)
            """
        )
        let s = stride ?? kernel
        let ah = PoolAxis(
            length: shape[2], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode,
            includePad: countIncludePad)
        let aw = PoolAxis(
            length: shape[3], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode,
            includePad: countIncludePad)
        return averagePool(ah, aw, "avg_pool2d")
    }

    /// Average pooling to a fixed output size (PyTorch's `adaptive_avg_pool2d`).
    public func adaptiveAvgPool2d(_ outputSize: (Int, Int)) -> Tensor {
        require(rank == 4, "adaptive_avg_pool2d: expected 4-D input [N, C, H, W], got \(shape)")
        return averagePool(
            PoolAxis(length: shape[2], adaptive: outputSize.0), PoolAxis(length: shape[3], adaptive: outputSize.1),
            "adaptive_avg_pool2d")
    }

    /// Mean over height and width, `[N, C, H, W] → [N, C]`.
    public func globalAvgPool() -> Tensor { adaptiveAvgPool2d((1, 1)).flatten(startDim: 1) }

    /// 2-D max pooling (PyTorch's `max_pool2d`; `stride` defaults to `kernel`).
    public func maxPool2d(kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false) -> Tensor {
        require(rank == 4, "max_pool2d: expected 4-D input [N, C, H, W], got \(shape)")
        require(
            padding <= kernel / 2,
            "max_pool2d: pad should be at most half of kernel size, got padding \(padding) for kernel \(kernel)")
        let s = stride ?? kernel
        let ah = PoolAxis(
            length: shape[2], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode, includePad: false)
        let aw = PoolAxis(
            length: shape[3], kernel: kernel, stride: s, padding: padding, ceilMode: ceilMode, includePad: false)
        return maxPool(ah, aw, "max_pool2d")
    }

    /// Max pooling to a fixed output size (PyTorch's `adaptive_max_pool2d`).
    public func adaptiveMaxPool2d(_ outputSize: (Int, Int)) -> Tensor {
        require(rank == 4, "adaptive_max_pool2d: expected 4-D input [N, C, H, W], got \(shape)")
        return maxPool(
            PoolAxis(length: shape[2], adaptive: outputSize.0), PoolAxis(length: shape[3], adaptive: outputSize.1),
            "adaptive_max_pool2d")
    }

    private func maxPool(_ ah: PoolAxis, _ aw: PoolAxis, _ op: String) -> Tensor {
        requireCompute(op)
        require(ah.count > 0 && aw.count > 0, "\(op): output size is too small for input \(shape)")
        let grad = Tensor.needsGrad(self)
        let (y0, arg) =
            dtype == .float32
            ? maxPoolKernel(ah, aw, withArg: grad, Float.self)
            : maxPoolKernel(ah, aw, withArg: grad, Double.self)
        var y = y0
        if grad, let argmax = arg {
            let like = detached()
            y.recordGrad(op, [self]) { g in
                [
                    like.dtype == .float32
                        ? Tensor.maxPoolBackward(g, argmax, like, Float.self)
                        : Tensor.maxPoolBackward(g, argmax, like, Double.self)
                ]
            }
        }
        return y
    }

    /// Output tensor for a pool: channels-last when the input is.
    private func poolOutput(_ oh: Int, _ ow: Int, dtype dt: DType) -> Tensor {
        let sh = [shape[0], shape[1], oh, ow]
        return isChannelsLast && shape[1] > 1
            ? Tensor(empty: sh, dtype: dt, strides: Tensor.channelsLastStrides(sh))
            : Tensor(empty: sh, dtype: dt)
    }

    private func averagePool(_ ah: PoolAxis, _ aw: PoolAxis, _ op: String) -> Tensor {
        requireCompute(op)
        require(ah.count > 0 && aw.count > 0, "\(op): output size is too small for input \(shape)")
        var y = dtype == .float32 ? avgPoolKernel(ah, aw, Float.self) : avgPoolKernel(ah, aw, Double.self)
        if Tensor.needsGrad(self) {
            let like = detached()
            y.recordGrad(op, [self]) { g in
                [
                    like.dtype == .float32
                        ? Tensor.avgPoolBackward(g, like, ah, aw, Float.self)
                        : Tensor.avgPoolBackward(g, like, ah, aw, Double.self)
                ]
            }
        }
        return y
    }

    private func avgPoolKernel<T: FloatElement>(_ ah: PoolAxis, _ aw: PoolAxis, _: T.Type) -> Tensor {
        let out = poolOutput(ah.count, aw.count, dtype: dtype)
        let (n, c) = (shape[0], shape[1])
        let xs = strides, os = out.strides
        let px = pointer(T.self), po = out.pointer(T.self)
        Parallel.forEachChunk(n * ah.count, grain: 8) { rows in
            for r in rows {
                let b = r / ah.count, i = r % ah.count
                for j in 0..<aw.count {
                    let inv = 1 / T(ah.size[i] * aw.size[j])
                    let o = po + b * os[0] + i * os[2] + j * os[3]
                    for ch in 0..<c { o[ch * os[1]] = 0 }
                    for h in ah.start[i]..<ah.end[i] {
                        for w in aw.start[j]..<aw.end[j] {
                            let x = px + b * xs[0] + h * xs[2] + w * xs[3]
                            if xs[1] == 1 && os[1] == 1 {
                                for ch in 0..<c { o[ch] += x[ch] }
                            } else {
                                for ch in 0..<c { o[ch * os[1]] += x[ch * xs[1]] }
                            }
                        }
                    }
                    for ch in 0..<c { o[ch * os[1]] *= inv }
                }
            }
        }
        return out
    }

    private static func avgPoolBackward<T: FloatElement>(
        _ g: Tensor, _ like: Tensor, _ ah: PoolAxis, _ aw: PoolAxis,
        _: T.Type
    ) -> Tensor {
        let dx = Tensor.zeros(like: like)
        let (n, c) = (like.shape[0], like.shape[1])
        let gs = g.strides, ds = dx.strides
        let pg = g.pointer(T.self), pd = dx.pointer(T.self)
        // Rows of the input a batch item touches don't overlap across items: parallel over the batch.
        Parallel.forEachChunk(n, grain: 1) { items in
            for b in items {
                for i in 0..<ah.count {
                    for j in 0..<aw.count {
                        let inv = 1 / T(ah.size[i] * aw.size[j])
                        let gp = pg + b * gs[0] + i * gs[2] + j * gs[3]
                        for h in ah.start[i]..<ah.end[i] {
                            for w in aw.start[j]..<aw.end[j] {
                                let d = pd + b * ds[0] + h * ds[2] + w * ds[3]
                                if gs[1] == 1 && ds[1] == 1 {
                                    for ch in 0..<c { d[ch] += gp[ch] * inv }
                                } else {
                                    for ch in 0..<c { d[ch * ds[1]] += gp[ch * gs[1]] * inv }
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Max and, when `withArg`, the flat `h * W + w` position of the first maximum (a NaN wins, the last one, as
    /// PyTorch).
    private func maxPoolKernel<T: FloatElement>(_ ah: PoolAxis, _ aw: PoolAxis, withArg: Bool, _: T.Type) -> (
        Tensor, Tensor?
    ) {
        let out = poolOutput(ah.count, aw.count, dtype: dtype)
        let arg = withArg ? Tensor(empty: out.shape, dtype: .int32, strides: out.strides) : nil
        let (n, c) = (shape[0], shape[1]), width = shape[3]
        let xs = strides, os = out.strides
        let px = pointer(T.self), po = out.pointer(T.self), pa = arg?.pointer(Int32.self)
        let vectorised = T.self == Float.self && xs[1] == 1 && os[1] == 1
        Parallel.forEachChunk(n * ah.count, grain: 8) { rows in
            for r in rows {
                let b = r / ah.count, i = r % ah.count
                for j in 0..<aw.count {
                    let at = b * os[0] + i * os[2] + j * os[3]
                    let window = (h: ah.start[i]..<ah.end[i], w: aw.start[j]..<aw.end[j])
                    var first = 0
                    if vectorised {
                        first = Tensor.maxWindowFloat8(
                            UnsafeRawPointer(px + b * xs[0]), xs[2], xs[3], window, width, c,
                            UnsafeMutableRawPointer(po + at), pa.map { $0 + at })
                    }
                    let o = po + at, a = pa.map { $0 + at }
                    for ch in first..<c {
                        let x = px + b * xs[0] + ch * xs[1]
                        var best = x[window.h.lowerBound * xs[2] + window.w.lowerBound * xs[3]]
                        var pos = Int32(window.h.lowerBound * width + window.w.lowerBound)
                        for h in window.h {
                            for w in window.w {
                                let v = x[h * xs[2] + w * xs[3]]
                                if v > best || v.isNaN { best = v; pos = Int32(h * width + w) }
                            }
                        }
                        o[ch * os[1]] = best
                        a?[ch * os[1]] = pos
                    }
                }
            }
        }
        return (out, arg)
    }

    /// Channels-last float max over one window, eight channels at a time; returns the channels done.
    private static func maxWindowFloat8(
        _ x: UnsafeRawPointer, _ sh: Int, _ sw: Int, _ window: (h: Range<Int>, w: Range<Int>),
        _ width: Int, _ c: Int, _ o: UnsafeMutableRawPointer,
        _ a: UnsafeMutablePointer<Int32>?
    ) -> Int {
        let stride = MemoryLayout<Float>.stride
        var ch = 0
        while ch + 8 <= c {
            let h0 = window.h.lowerBound, w0 = window.w.lowerBound
            var best = x.loadUnaligned(fromByteOffset: (h0 * sh + w0 * sw + ch) * stride, as: SIMD8<Float>.self)
            var pos = SIMD8<Int32>(repeating: Int32(h0 * width + w0))
            for h in window.h {
                for w in window.w where h != h0 || w != w0 {
                    let v = x.loadUnaligned(fromByteOffset: (h * sh + w * sw + ch) * stride, as: SIMD8<Float>.self)
                    let take = (v .> best) .| (v .!= v)
                    best.replace(with: v, where: take)
                    if a != nil { pos.replace(with: SIMD8<Int32>(repeating: Int32(h * width + w)), where: take) }
                }
            }
            o.storeBytes(of: best, toByteOffset: ch * stride, as: SIMD8<Float>.self)
            if let a { UnsafeMutableRawPointer(a + ch).storeBytes(of: pos, as: SIMD8<Int32>.self) }
            ch += 8
        }
        return ch
    }

    private static func maxPoolBackward<T: FloatElement>(_ g: Tensor, _ arg: Tensor, _ like: Tensor, _: T.Type)
        -> Tensor
    {
        let dx = Tensor.zeros(like: like)
        let (n, c, oh, ow) = (g.shape[0], g.shape[1], g.shape[2], g.shape[3]), width = like.shape[3]
        let gs = g.strides, asx = arg.strides, ds = dx.strides
        let pg = g.pointer(T.self), pa = arg.pointer(Int32.self), pd = dx.pointer(T.self)
        Parallel.forEachChunk(n, grain: 1) { items in
            for b in items {
                for i in 0..<oh {
                    for j in 0..<ow {
                        for ch in 0..<c {
                            let pos = Int(pa[b * asx[0] + ch * asx[1] + i * asx[2] + j * asx[3]])
                            pd[b * ds[0] + ch * ds[1] + (pos / width) * ds[2] + (pos % width) * ds[3]] +=
                                pg[b * gs[0] + ch * gs[1] + i * gs[2] + j * gs[3]]
                        }
                    }
                }
            }
        }
        return dx
    }
}
