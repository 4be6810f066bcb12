// Batch normalisation with per-channel kernels for channels-last ([M, C] rows) and NCHW ([N, C, S] planes).
//
// Written here rather than with oneDNN's batch-norm primitive: the statistics, the running-stat update
// PyTorch performs (unbiased variance) and the backward all reduce to two fused per-channel passes over
// memory we already hold in the right layout, and the same code serves Float64 gradient checks.

/// How channel `c` of a tensor is laid out in memory.
enum ChannelLayout: Equatable {
    /// `data[m * C + c]` — channels-last 4-D or contiguous 2-D.
    case rows(m: Int, c: Int)
    /// `data[(n * C + c) * S + s]` — contiguous NCHW (or `[N, C, L]`).
    case planes(n: Int, c: Int, s: Int)

    init?(_ t: Tensor) {
        guard t.rank >= 2 else { return nil }
        let c = t.shape[1]
        if t.rank == 2 && t.isContiguous { self = .rows(m: t.shape[0], c: c); return }
        if t.isChannelsLast && c > 1 { self = .rows(m: t.count / Swift.max(c, 1), c: c); return }
        if t.isContiguous { self = .planes(n: t.shape[0], c: c, s: t.count / Swift.max(t.shape[0] * c, 1)); return }
        return nil
    }
}

extension Tensor {
    /// `self` in a layout the channel kernels accept, plus that layout.
    func channelLayoutView() -> (Tensor, ChannelLayout) {
        if let l = ChannelLayout(self) { return (self, l) }
        let c = contiguous()
        return (c, ChannelLayout(c)!)
    }

    /// `self` copied (if needed) into the exact layout of `like`.
    func matchingLayout(_ like: Tensor) -> Tensor {
        if strides == like.strides || isContiguous && like.isContiguous { return self }
        var out = Tensor(empty: shape, dtype: dtype, strides: like.strides)
        out.copyElements(from: self)
        return out
    }

    /// Per-channel Σ(a − ka) and Σ(a − ka)(b − kb) in `Double` (`b` defaults to `a`).
    static func channelSums<T: FloatElement>(
        _ a: Tensor, _ b: Tensor?, _ layout: ChannelLayout, ka: [T], kb: [T],
        _: T.Type
    ) -> ([Double], [Double]) {
        let pa = a.pointer(T.self), pb = (b ?? a).pointer(T.self)
        switch layout {
        case let .rows(m, c):
            let threads = Swift.max(1, Swift.min(Parallel.threadCount, m * c / 32_768))
            var s1 = [Double](repeating: 0, count: threads * c), s2 = s1
            s1.withUnsafeMutableBufferPointer { p1 in
                s2.withUnsafeMutableBufferPointer { p2 in
                    let per = (m + threads - 1) / threads
                    Parallel.forEachChunk(threads, grain: 1) { tr in
                        for t in tr {
                            let lo = t * per, hi = Swift.min(m, lo + per)
                            var f1 = [T](repeating: 0, count: c), f2 = f1
                            ka.withUnsafeBufferPointer { kap in
                                kb.withUnsafeBufferPointer { kbp in
                                    f1.withUnsafeMutableBufferPointer { q1 in
                                        f2.withUnsafeMutableBufferPointer { q2 in
                                            var row = lo
                                            while row < hi {
                                                let end = Swift.min(hi, row + 128)
                                                for r in row..<end {
                                                    let xa = pa + r * c, xb = pb + r * c
                                                    for ch in 0..<c {
                                                        let u = xa[ch] - kap[ch], v = xb[ch] - kbp[ch]
                                                        q1[ch] += u
                                                        q2[ch] += u * v
                                                    }
                                                }
                                                for ch in 0..<c {
                                                    p1[t * c + ch] += q1[ch].doubleValue; q1[ch] = 0
                                                    p2[t * c + ch] += q2[ch].doubleValue; q2[ch] = 0
                                                }
                                                row = end
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            var r1 = [Double](repeating: 0, count: c), r2 = r1
            for t in 0..<threads { for ch in 0..<c { r1[ch] += s1[t * c + ch]; r2[ch] += s2[t * c + ch] } }
            return (r1, r2)
        case let .planes(n, c, s):
            var r1 = [Double](repeating: 0, count: c), r2 = r1
            r1.withUnsafeMutableBufferPointer { p1 in
                r2.withUnsafeMutableBufferPointer { p2 in
                    Parallel.forEachChunk(c, grain: 1) { chans in
                        for ch in chans {
                            let ua = ka[ch], ub = kb[ch]
                            var d1 = 0.0, d2 = 0.0
                            for b in 0..<n {
                                let xa = pa + (b * c + ch) * s, xb = pb + (b * c + ch) * s
                                var f1: T = 0, f2: T = 0
                                for i in 0..<s { let u = xa[i] - ua; f1 += u; f2 += u * (xb[i] - ub) }
                                d1 += f1.doubleValue; d2 += f2.doubleValue
                            }
                            p1[ch] = d1; p2[ch] = d2
                        }
                    }
                }
            }
            return (r1, r2)
        }
    }

    /// out = k1[c]·a + k2[c]·b + k3[c] (`b` optional), written in `a`'s layout.
    static func channelAffine<T: FloatElement>(
        _ a: Tensor, _ b: Tensor?, _ layout: ChannelLayout, _ k1: [T], _ k2: [T],
        _ k3: [T]
    ) -> Tensor {
        let out = Tensor(empty: a.shape, dtype: a.dtype, strides: a.strides)
        let pa = a.pointer(T.self), pb = (b ?? a).pointer(T.self), po = out.pointer(T.self)
        let useB = b != nil
        k1.withUnsafeBufferPointer { c1 in
            k2.withUnsafeBufferPointer { c2 in
                k3.withUnsafeBufferPointer { c3 in
                    switch layout {
                    case let .rows(m, c):
                        Parallel.forEachChunk(m, grain: Swift.max(1, 16_384 / Swift.max(c, 1))) { rows in
                            for r in rows {
                                let xa = pa + r * c, xb = pb + r * c, o = po + r * c
                                if useB {
                                    for ch in 0..<c { o[ch] = c1[ch] * xa[ch] + c2[ch] * xb[ch] + c3[ch] }
                                } else {
                                    for ch in 0..<c { o[ch] = c1[ch] * xa[ch] + c3[ch] }
                                }
                            }
                        }
                    case let .planes(n, c, s):
                        Parallel.forEachChunk(n * c, grain: Swift.max(1, 16_384 / Swift.max(s, 1))) { planes in
                            for p in planes {
                                let ch = p % c
                                let xa = pa + p * s, xb = pb + p * s, o = po + p * s
                                let u = c1[ch], v = c2[ch], w = c3[ch]
                                if useB {
                                    for i in 0..<s { o[i] = u * xa[i] + v * xb[i] + w }
                                } else {
                                    for i in 0..<s { o[i] = u * xa[i] + w }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Batch normalisation over dimension 1 with running statistics (PyTorch's `F.batch_norm`).
    ///
    /// In training the batch statistics normalise and the running ones move by `momentum`
    /// (`running_var` with the unbiased variance); in evaluation the running ones normalise.
    public func batchNorm(
        weight: Tensor?, bias: Tensor?, runningMean: inout Tensor, runningVar: inout Tensor,
        training: Bool, momentum: Double = 0.1, eps: Double = 1e-5
    ) -> Tensor {
        let c = rank >= 2 ? shape[1] : 0
        require(
            runningMean.shape == [c] && runningVar.shape == [c],
            """
            batch_norm: running_mean \(runningMean.shape) and running_var \(runningVar.shape) should have shape [\(c)] \
            for input \(shape)
            """
        )
        var stats: (mean: [Double], variance: [Double])? = nil
        let y = batchNormImpl(
            weight: weight, bias: bias, running: training ? nil : (runningMean.doubles, runningVar.doubles),
            eps: eps, stats: &stats)
        if training, let stats {
            let m = Double(count / Swift.max(c, 1))
            let unbiased = stats.variance.map { $0 * m / Swift.max(m - 1, 1) }
            noGrad {
                runningMean =
                    (runningMean * (1 - momentum) + Tensor(stats.mean, shape: [c]).to(runningMean.dtype) * momentum)
                    .detached()
                runningVar =
                    (runningVar * (1 - momentum) + Tensor(unbiased, shape: [c]).to(runningVar.dtype) * momentum)
                    .detached()
            }
        }
        return y
    }

    /// Batch normalisation with batch statistics only (no running statistics).
    public func batchNorm(weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) -> Tensor {
        var stats: (mean: [Double], variance: [Double])? = nil
        return batchNormImpl(weight: weight, bias: bias, running: nil, eps: eps, stats: &stats)
    }

    private func batchNormImpl(
        weight: Tensor?, bias: Tensor?, running: ([Double], [Double])?, eps: Double,
        stats: inout (mean: [Double], variance: [Double])?
    ) -> Tensor {
        requireCompute("batch_norm")
        require(rank >= 2, "batch_norm: expected at least 2-D input [N, C, ...], got \(shape)")
        let c = shape[1], m = count / Swift.max(c, 1)
        if let weight {
            require(
                weight.shape == [c] && weight.dtype == dtype,
                "batch_norm: weight \(weight.shape) \(weight.dtype) should be [\(c)] \(dtype)")
        }
        if let bias {
            require(
                bias.shape == [c] && bias.dtype == dtype,
                "batch_norm: bias \(bias.shape) \(bias.dtype) should be [\(c)] \(dtype)")
        }
        require(
            running != nil || m > 1,
            "batch_norm: expected more than 1 value per channel when training, got input size \(shape)")
        let (x, layout) = detached().channelLayoutView()
        let gamma = weight?.doubles ?? [Double](repeating: 1, count: c)
        let beta = bias?.doubles ?? [Double](repeating: 0, count: c)
        func go<T: FloatElement>(_: T.Type) -> (Tensor, [Double], [Double], [Double]) {
            var mean: [Double], variance: [Double]
            if let running {
                (mean, variance) = running
            } else {
                // Shift by one sample per channel so the one-pass variance does not cancel.
                let k: [T] = (0..<c).map { ch in
                    switch layout {
                    case .rows: return x.pointer(T.self)[ch]
                    case let .planes(_, _, s): return x.pointer(T.self)[ch * s]
                    }
                }
                let (s1, s2) = Tensor.channelSums(x, nil, layout, ka: k, kb: k, T.self)
                mean = (0..<c).map { k[$0].doubleValue + s1[$0] / Double(m) }
                variance = (0..<c).map {
                    Swift.max(s2[$0] / Double(m) - (s1[$0] / Double(m)) * (s1[$0] / Double(m)), 0)
                }
            }
            let invstd = variance.map { 1 / ($0 + eps).squareRoot() }
            let scale = (0..<c).map { T(gamma[$0] * invstd[$0]) }
            let shift = (0..<c).map { T(beta[$0] - mean[$0] * gamma[$0] * invstd[$0]) }
            let y = Tensor.channelAffine(x, nil, layout, scale, scale, shift)
            return (y, mean, variance, invstd)
        }
        var (y, mean, variance, invstd) = dtype == .float32 ? go(Float.self) : go(Double.self)
        if running == nil { stats = (mean, variance) }
        let inputs = [self] + (weight.map { [$0] } ?? []) + (bias.map { [$0] } ?? [])
        if inputs.contains(where: { $0.node != nil }) && GradMode.isEnabled {
            let needX = node != nil, needW = weight?.node != nil, needB = bias?.node != nil
            let training = running == nil, saved = SavedActivation(x)
            y.recordGrad("batch_norm", inputs) { g in
                let x = saved.tensor
                let dy = g.matchingLayout(x)
                func back<T: FloatElement>(_: T.Type) -> [Tensor?] {
                    let zero = [T](repeating: 0, count: c)
                    let (sdy, sdyx) = Tensor.channelSums(dy, x, layout, ka: zero, kb: mean.map { T($0) }, T.self)
                    var dx: Tensor? = nil
                    if needX {
                        let k1 = (0..<c).map { T(gamma[$0] * invstd[$0]) }
                        if training {
                            let md = Double(m)
                            let k2 = (0..<c).map {
                                T(-gamma[$0] * invstd[$0] * invstd[$0] * invstd[$0] * sdyx[$0] / md)
                            }
                            let k3 = (0..<c).map {
                                T(
                                    -gamma[$0] * invstd[$0] * sdy[$0] / md + gamma[$0] * invstd[$0] * invstd[$0]
                                        * invstd[$0] * sdyx[$0] / md * mean[$0])
                            }
                            dx = Tensor.channelAffine(dy, x, layout, k1, k2, k3)
                        } else {
                            dx = Tensor.channelAffine(dy, nil, layout, k1, zero, zero)
                        }
                    }
                    var out: [Tensor?] = [dx]
                    let dt = x.dtype
                    if weight != nil {
                        out.append(needW ? Tensor((0..<c).map { sdyx[$0] * invstd[$0] }, shape: [c]).to(dt) : nil)
                    }
                    if bias != nil { out.append(needB ? Tensor(sdy, shape: [c]).to(dt) : nil) }
                    return out
                }
                return x.dtype == .float32 ? back(Float.self) : back(Double.self)
            }
        }
        return y
    }
}

// MARK: Batch norm in two steps (synchronised batch norm)

extension Tensor {
    /// Per-channel Σx and Σx² over every dimension but 1, as a float64 `[2, C]` tensor; differentiable. The sums of
    /// several processes' batches add up to the sums of their union (SyncBatchNorm all-reduces them), and the
    /// float64 totals leave the variance `Σx²/n − (Σx/n)²` accurate even where the mean is large.
    public func channelMoments() -> Tensor {
        requireCompute("channel_moments")
        require(rank >= 2, "channel_moments: expected at least 2-D input [N, C, ...], got \(shape)")
        let c = shape[1], m = count / Swift.max(c, 1)
        let (x, layout) = detached().channelLayoutView()
        var s1 = [Double](repeating: 0, count: c), s2 = s1
        func go<T: FloatElement>(_: T.Type) {
            // Shifted by one sample per channel so the sums of squares do not lose the variance.
            let k: [T] = (0..<c).map { ch in
                switch layout {
                case .rows: return x.pointer(T.self)[ch]
                case let .planes(_, _, s): return x.pointer(T.self)[ch * s]
                }
            }
            let (d1, d2) = Tensor.channelSums(x, nil, layout, ka: k, kb: k, T.self)
            for ch in 0..<c {
                let kd = k[ch].doubleValue
                s1[ch] = d1[ch] + Double(m) * kd
                s2[ch] = d2[ch] + 2 * kd * d1[ch] + Double(m) * kd * kd
            }
        }
        if m > 0 && dtype == .float32 {
            go(Float.self)
        } else if m > 0 {
            go(Double.self)
        }
        var y = Tensor(s1 + s2, shape: [2, c])
        if Tensor.needsGrad(self) {
            let saved = SavedActivation(x)
            y.recordGrad("channel_moments", [self]) { g in
                let x = saved.tensor, gd = g.doubles
                guard m > 0 else { return [Tensor.zeros(like: x)] }
                func back<T: FloatElement>(_: T.Type) -> Tensor {
                    let k1 = (0..<c).map { T(2 * gd[c + $0]) }, k3 = (0..<c).map { T(gd[$0]) }
                    return Tensor.channelAffine(x, nil, layout, k1, k1, k3)
                }
                return [x.dtype == .float32 ? back(Float.self) : back(Double.self)]
            }
        }
        return y
    }

    /// `(x − mean)·invstd·weight + bias` per channel (dimension 1) with given statistics (`[C]`, any float type),
    /// differentiable in all five (PyTorch's `batch_norm_elemt` and its backward). The output keeps `self`'s layout.
    public func batchNorm(mean: Tensor, invstd: Tensor, weight: Tensor?, bias: Tensor?) -> Tensor {
        requireCompute("batch_norm_elemt")
        require(rank >= 2, "batch_norm_elemt: expected at least 2-D input [N, C, ...], got \(shape)")
        let c = shape[1]
        let named: [(String, Tensor?)] = [("mean", mean), ("invstd", invstd), ("weight", weight), ("bias", bias)]
        for case let (name, t?) in named {
            require(
                t.shape == [c] && t.dtype.isFloatingPoint,
                "batch_norm_elemt: \(name) \(t.shape) \(t.dtype) should be a float [\(c)] for input \(shape)")
        }
        let (x, layout) = detached().channelLayoutView()
        let mu = mean.doubles, inv = invstd.doubles
        let gamma = weight?.doubles ?? [Double](repeating: 1, count: c)
        let beta = bias?.doubles ?? [Double](repeating: 0, count: c)
        let scale = (0..<c).map { gamma[$0] * inv[$0] }
        func go<T: FloatElement>(_: T.Type) -> Tensor {
            let k1 = scale.map { T($0) }, k3 = (0..<c).map { T(beta[$0] - mu[$0] * scale[$0]) }
            return Tensor.channelAffine(x, nil, layout, k1, k1, k3)
        }
        var y = dtype == .float32 ? go(Float.self) : go(Double.self)
        let inputs = [self, mean, invstd] + [weight, bias].compactMap { $0 }
        if inputs.contains(where: { $0.node != nil }) && GradMode.isEnabled {
            let needX = node != nil, saved = SavedActivation(x)
            let types = inputs.map(\.dtype), hasWeight = weight != nil, hasBias = bias != nil
            y.recordGrad("batch_norm_elemt", inputs) { g in
                let x = saved.tensor, dy = g.matchingLayout(x)
                func back<T: FloatElement>(_: T.Type) -> [Tensor?] {
                    let zero = [T](repeating: 0, count: c)
                    let (sdy, sdyx) = Tensor.channelSums(dy, x, layout, ka: zero, kb: mu.map { T($0) }, T.self)
                    let k1 = scale.map { T($0) }
                    let dx = needX ? Tensor.channelAffine(dy, nil, layout, k1, k1, zero) : nil
                    func vector(_ v: [Double], _ i: Int) -> Tensor { Tensor(v, shape: [c]).to(types[i]) }
                    var out: [Tensor?] = [
                        dx, vector((0..<c).map { -scale[$0] * sdy[$0] }, 1),
                        vector((0..<c).map { gamma[$0] * sdyx[$0] }, 2)
                    ]
                    if hasWeight { out.append(vector((0..<c).map { inv[$0] * sdyx[$0] }, 3)) }
                    if hasBias { out.append(vector(sdy, out.count)) }
                    return out
                }
                return x.dtype == .float32 ? back(Float.self) : back(Double.self)
            }
        }
        return y
    }
}
