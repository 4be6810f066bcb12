// Softmax, log-softmax, negative log-likelihood, cross-entropy and dropout.

/// How a loss over a batch is reduced.
public enum Reduction: String, Sendable {
    case none, mean, sum
}

extension Tensor {
    /// Runs `body` on a contiguous `[rows, k]` view with `dim` last, and maps the result back.
    private func alongLastDim(_ dim: Int, _ op: String, _ body: (Tensor, Int, Int) -> Tensor) -> Tensor {
        let d = dimIndex(dim, op)
        let moved = movedim(d, -1).contiguous()
        let k = shape.isEmpty ? 1 : shape[d]
        let out = body(moved, moved.count / Swift.max(k, 1), k)
        return out.movedim(-1, d)
    }

    private static func rowKernel<T: FloatElement>(_ x: Tensor, _ rows: Int, _ k: Int, log: Bool, _: T.Type) -> Tensor {
        let out = Tensor(empty: x.shape, dtype: x.dtype)
        let px = x.pointer(T.self), po = out.pointer(T.self)
        Parallel.forEachChunk(rows, grain: Swift.max(1, 8192 / Swift.max(k, 1))) { rs in
            for r in rs {
                let xi = px + r * k, o = po + r * k
                var mx = -T.infinity
                for j in 0..<k where xi[j] > mx || xi[j].isNaN { mx = xi[j] }
                if mx == -.infinity { mx = 0 }
                var s: T = 0
                for j in 0..<k { let e = T.exp(xi[j] - mx); o[j] = e; s += e }
                if log {
                    let ls = T.log(s)
                    for j in 0..<k { o[j] = xi[j] - mx - ls }
                } else {
                    let inv = 1 / s
                    for j in 0..<k { o[j] *= inv }
                }
            }
        }
        return out
    }

    /// Backward of (log-)softmax along rows: log: g − eʸ·Σg; plain: y·(g − Σ g·y).
    private static func rowBackward<T: FloatElement>(
        _ y: Tensor, _ g: Tensor, _ rows: Int, _ k: Int, log: Bool, _: T.Type
    ) -> Tensor {
        let out = Tensor(empty: y.shape, dtype: y.dtype)
        let py = y.pointer(T.self), pg = g.pointer(T.self), po = out.pointer(T.self)
        Parallel.forEachChunk(rows, grain: Swift.max(1, 8192 / Swift.max(k, 1))) { rs in
            for r in rs {
                let yi = py + r * k, gi = pg + r * k, o = po + r * k
                var s: T = 0
                if log {
                    for j in 0..<k { s += gi[j] }
                    for j in 0..<k { o[j] = gi[j] - T.exp(yi[j]) * s }
                } else {
                    for j in 0..<k { s += gi[j] * yi[j] }
                    for j in 0..<k { o[j] = yi[j] * (gi[j] - s) }
                }
            }
        }
        return out
    }

    private func softmaxImpl(_ dim: Int, log: Bool) -> Tensor {
        let op = log ? "log_softmax" : "softmax"
        requireCompute(op)
        let d = rank == 0 ? 0 : dimIndex(dim, op)
        if rank == 0 { return log ? Tensor.zeros([], dtype: dtype) : Tensor.ones([], dtype: dtype) }
        var y = alongLastDim(d, op) { x, rows, k in
            dtype == .float32
                ? Tensor.rowKernel(x, rows, k, log: log, Float.self)
                : Tensor.rowKernel(x, rows, k, log: log, Double.self)
        }.detached()
        if Tensor.needsGrad(self) {
            let saved = y
            y.recordGrad(op, [self]) { g in
                let ym = saved.movedim(d, -1).contiguous(), gm = g.movedim(d, -1).contiguous()
                let k = saved.shape[d], rows = ym.count / Swift.max(k, 1)
                let dx =
                    saved.dtype == .float32
                    ? Tensor.rowBackward(ym, gm, rows, k, log: log, Float.self)
                    : Tensor.rowBackward(ym, gm, rows, k, log: log, Double.self)
                return [dx.movedim(-1, d)]
            }
        }
        return y
    }

    /// Softmax along `dim`.
    public func softmax(dim: Int) -> Tensor { softmaxImpl(dim, log: false) }

    /// Log-softmax along `dim` (numerically stable).
    public func logSoftmax(dim: Int) -> Tensor { softmaxImpl(dim, log: true) }

    /// Randomly zeroes elements with probability `p` and scales the rest by 1/(1−p) in training.
    public func dropout(p: Double, training: Bool = true, generator: Generator = .default) -> Tensor {
        require(p >= 0 && p <= 1, "dropout: probability has to be between 0 and 1, but got \(p)")
        if !training || p == 0 { return self }
        if p == 1 { return self * 0 }
        var mask = Tensor.bernoulli([count], p: 1 - p, dtype: dtype, generator: generator) / (1 - p)
        mask =
            isDense
            ? mask.viewing(shape: shape, strides: Tensor.stridesFollowing([self], shape: shape), offset: 0)
            : mask.reshape(shape)
        return self * mask
    }

    /// Zeroes whole channels (dimension 1) with probability `p` (PyTorch's `Dropout2d`).
    public func dropout2d(p: Double, training: Bool = true, generator: Generator = .default) -> Tensor {
        require(p >= 0 && p <= 1, "dropout2d: probability has to be between 0 and 1, but got \(p)")
        require(rank >= 2, "dropout2d: expected input with at least 2 dimensions, got \(shape)")
        if !training || p == 0 { return self }
        let maskShape = [shape[0], shape[1]] + [Int](repeating: 1, count: rank - 2)
        return self
            * (Tensor.bernoulli(maskShape, p: 1 - p, dtype: dtype, generator: generator) / Swift.max(1 - p, 1e-12))
    }
}

/// Negative log-likelihood of `target` classes under log-probabilities `input` `[N, C]`.
///
/// - Parameters:
///   - weight: per-class weights `[C]`; a weighted mean divides by the total weight of the targets.
///   - ignoreIndex: targets with this value contribute nothing.
public func nllLoss(
    _ input: Tensor, _ target: Tensor, weight: Tensor? = nil, ignoreIndex: Int = -100,
    reduction: Reduction = .mean
) -> Tensor {
    require(input.rank == 2, "nll_loss: expected input of shape [N, C], got \(input.shape)")
    require(
        target.shape == [input.shape[0]],
        "nll_loss: expected target of shape [\(input.shape[0])] for input \(input.shape), got \(target.shape)")
    let c = input.shape[1]
    let labels = target.scalars(as: Int64.self)
    let keep = labels.map { Int($0) != ignoreIndex }
    for (l, k) in zip(labels, keep) where k {
        require(l >= 0 && Int(l) < c, "nll_loss: target \(l) is out of bounds for \(c) classes")
    }
    let safe = Tensor(labels.enumerated().map { keep[$0.offset] ? $0.element : 0 }, shape: [labels.count, 1])
    let w: Tensor = {
        let mask = Tensor(keep.map { $0 ? 1.0 : 0.0 }, shape: [labels.count]).to(input.dtype)
        guard let weight else { return mask }
        return weight.detached().indexSelect(dim: 0, index: safe.reshape([-1])) * mask
    }()
    let losses = -(input.gather(dim: 1, index: safe).reshape([-1])) * w
    switch reduction {
    case .none: return losses
    case .sum: return losses.sum()
    case .mean: return losses.sum() / w.sum().item()
    }
}

/// Cross-entropy between `logits` `[N, C]` and class indices `[N]` (or class probabilities `[N, C]`),
/// with optional class weights and label smoothing, as PyTorch's `F.cross_entropy`.
public func crossEntropy(
    _ logits: Tensor, _ target: Tensor, weight: Tensor? = nil, ignoreIndex: Int = -100,
    reduction: Reduction = .mean, labelSmoothing: Double = 0
) -> Tensor {
    require(logits.rank == 2, "cross_entropy: expected logits of shape [N, C], got \(logits.shape)")
    require(
        labelSmoothing >= 0 && labelSmoothing <= 1,
        "cross_entropy: label_smoothing must be in [0, 1], got \(labelSmoothing)")
    let logp = logits.logSoftmax(dim: 1)
    let c = logits.shape[1]
    if target.dtype.isFloatingPoint {
        require(
            target.shape == logits.shape,
            "cross_entropy: probability targets \(target.shape) must match logits \(logits.shape)")
        var t = target.detached().to(logits.dtype)
        if labelSmoothing > 0 { t = t * (1 - labelSmoothing) + labelSmoothing / Double(c) }
        var per = logp * t
        if let weight { per = per * weight.detached().reshape([1, c]) }
        let losses = -per.sum(dims: [1])
        switch reduction {
        case .none: return losses
        case .sum: return losses.sum()
        case .mean: return losses.mean()
        }
    }
    let nll = nllLoss(logp, target, weight: weight, ignoreIndex: ignoreIndex, reduction: reduction)
    if labelSmoothing == 0 { return nll }
    // Smoothing term: −Σ_c w_c·log p_c / C per sample, reduced like the nll term.
    let labels = target.scalars(as: Int64.self)
    let keep = Tensor(labels.map { Int($0) != ignoreIndex ? 1.0 : 0.0 }, shape: [labels.count]).to(logits.dtype)
    let weighted = weight.map { logp * $0.detached().reshape([1, c]) } ?? logp
    let smooth = -weighted.sum(dims: [1]) / Double(c) * keep
    let reducedSmooth: Tensor
    switch reduction {
    case .none: reducedSmooth = smooth
    case .sum: reducedSmooth = smooth.sum()
    case .mean:
        let denom: Double
        if let weight {
            let safe = Tensor(labels.map { Int($0) != ignoreIndex ? $0 : 0 }, shape: [labels.count])
            denom = (weight.detached().indexSelect(dim: 0, index: safe) * keep).sum().item()
        } else {
            denom = keep.sum().item()
        }
        reducedSmooth = smooth.sum() / denom
    }
    return nll * (1 - labelSmoothing) + reducedSmooth * labelSmoothing
}
