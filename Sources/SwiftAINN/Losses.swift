import SwiftAICore

private func reduce(_ t: Tensor, _ r: Reduction) -> Tensor {
    switch r {
    case .none: return t
    case .mean: return t.mean()
    case .sum: return t.sum()
    }
}

private func checkSameShape(_ op: String, _ input: Tensor, _ target: Tensor) {
    require(input.shape == target.shape, "\(op): input shape \(input.shape) and target shape \(target.shape) must match")
}

/// Mean squared error.
public func mseLoss(_ input: Tensor, _ target: Tensor, reduction: Reduction = .mean) -> Tensor {
    checkSameShape("mse_loss", input, target)
    let d = input - target
    return reduce(d * d, reduction)
}

/// Mean absolute error.
public func l1Loss(_ input: Tensor, _ target: Tensor, reduction: Reduction = .mean) -> Tensor {
    checkSameShape("l1_loss", input, target)
    return reduce((input - target).abs(), reduction)
}

/// Binary cross-entropy on logits, computed stably as `max(x,0) − x·y + log(1 + e^{−|x|})`;
/// `posWeight` scales the positive term (PyTorch's `pos_weight`).
public func binaryCrossEntropyWithLogits(_ input: Tensor, _ target: Tensor, posWeight: Tensor? = nil,
                                         reduction: Reduction = .mean) -> Tensor {
    checkSameShape("binary_cross_entropy_with_logits", input, target)
    let y = target.detached().to(input.dtype)
    let softplusNeg = ((-input.abs()).exp() + 1).log() + (-input).relu()   // log(1 + e^{−x})
    let loss: Tensor
    if let posWeight {
        let w = (posWeight.detached().to(input.dtype) - 1) * y + 1
        loss = (1 - y) * input + w * softplusNeg
    } else {
        loss = (1 - y) * input + softplusNeg
    }
    return reduce(loss, reduction)
}

/// A loss function as a value: `(prediction, target) → scalar` (or per-item with `.none`).
public protocol Loss {
    func callAsFunction(_ prediction: Tensor, _ target: Tensor) -> Tensor
    /// The same loss with another reduction (the Learner uses `.none` for per-item losses).
    func with(reduction: Reduction) -> Self
}

public struct CrossEntropyLoss: Loss {
    public var weight: Tensor?, ignoreIndex: Int, reduction: Reduction, labelSmoothing: Double
    public init(weight: Tensor? = nil, ignoreIndex: Int = -100, reduction: Reduction = .mean, labelSmoothing: Double = 0) {
        self.weight = weight
        self.ignoreIndex = ignoreIndex
        self.reduction = reduction
        self.labelSmoothing = labelSmoothing
    }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor {
        crossEntropy(p, t, weight: weight, ignoreIndex: ignoreIndex, reduction: reduction, labelSmoothing: labelSmoothing)
    }
    public func with(reduction: Reduction) -> CrossEntropyLoss { var c = self; c.reduction = reduction; return c }
}

public struct NLLLoss: Loss {
    public var weight: Tensor?, ignoreIndex: Int, reduction: Reduction
    public init(weight: Tensor? = nil, ignoreIndex: Int = -100, reduction: Reduction = .mean) {
        self.weight = weight
        self.ignoreIndex = ignoreIndex
        self.reduction = reduction
    }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor {
        nllLoss(p, t, weight: weight, ignoreIndex: ignoreIndex, reduction: reduction)
    }
    public func with(reduction: Reduction) -> NLLLoss { var c = self; c.reduction = reduction; return c }
}

public struct MSELoss: Loss {
    public var reduction: Reduction
    public init(reduction: Reduction = .mean) { self.reduction = reduction }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor { mseLoss(p, t, reduction: reduction) }
    public func with(reduction: Reduction) -> MSELoss { MSELoss(reduction: reduction) }
}

public struct L1Loss: Loss {
    public var reduction: Reduction
    public init(reduction: Reduction = .mean) { self.reduction = reduction }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor { l1Loss(p, t, reduction: reduction) }
    public func with(reduction: Reduction) -> L1Loss { L1Loss(reduction: reduction) }
}

public struct BCEWithLogitsLoss: Loss {
    public var posWeight: Tensor?, reduction: Reduction
    public init(posWeight: Tensor? = nil, reduction: Reduction = .mean) {
        self.posWeight = posWeight
        self.reduction = reduction
    }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor {
        binaryCrossEntropyWithLogits(p, t, posWeight: posWeight, reduction: reduction)
    }
    public func with(reduction: Reduction) -> BCEWithLogitsLoss { var c = self; c.reduction = reduction; return c }
}
