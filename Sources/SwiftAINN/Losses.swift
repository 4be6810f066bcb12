import SwiftAICore

private func reduce(_ t: Tensor, _ r: Reduction) -> Tensor {
    switch r {
    case .none: return t
    case .mean: return t.mean()
    case .sum: return t.sum()
    }
}

private func checkSameShape(_ op: String, _ input: Tensor, _ target: Tensor) {
    require(
        input.shape == target.shape, "\(op): input shape \(input.shape) and target shape \(target.shape) must match")
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
public func binaryCrossEntropyWithLogits(
    _ input: Tensor, _ target: Tensor, posWeight: Tensor? = nil,
    reduction: Reduction = .mean
) -> Tensor {
    checkSameShape("binary_cross_entropy_with_logits", input, target)
    let y = target.detached().to(input.dtype)
    let softplusNeg = ((-input.abs()).exp() + 1).log() + (-input).relu()  // log(1 + e^{−x})
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
    /// Maps raw model outputs to what a user reads (probabilities for cross-entropy), fastai's `loss_func.activation`.
    func activation(_ output: Tensor) -> Tensor
    /// Why a model output of shape `output` cannot be scored against `target`, or `nil` when it can.
    /// The Learner checks one batch with it before training (a mismatch inside the op would stop the process).
    func mismatch(output: [Int], target: Tensor) -> String?
}

extension Loss {
    public func activation(_ output: Tensor) -> Tensor { output }

    public func mismatch(output: [Int], target: Tensor) -> String? {
        output == target.shape
            ? nil : "the model's output \(output) and the targets \(target.shape) must have the same shape"
    }
}

/// Checks class-index targets (or class probabilities) against `[N, C]` outputs.
private func classificationMismatch(_ output: [Int], _ target: Tensor, _ name: String) -> String? {
    guard output.count == 2 else {
        return
            """
            \(name) needs the model to output [batch, classes]; it outputs \(output) (targets \(target.shape)). Add a \
            Flatten/Linear head.
            """
    }
    if target.dtype.isFloatingPoint {
        return target.shape == output
            ? nil
            : "\(name) with probability targets needs targets shaped like the output \(output), got \(target.shape)"
    }
    guard target.shape == [output[0]] else {
        return "\(name) needs one class index per item: output \(output) but targets \(target.shape)"
    }
    let labels = target.scalars(as: Int64.self)
    if let bad = labels.first(where: { ($0 < 0 || Int($0) >= output[1]) && $0 != -100 }) {
        return
            """
            target class \(bad) does not exist: the model outputs \(output[1]) classes (output \(output), targets \
            \(target.shape))
            """
    }
    return nil
}

public struct CrossEntropyLoss: Loss {
    public var weight: Tensor?, ignoreIndex: Int, reduction: Reduction, labelSmoothing: Double
    public init(
        weight: Tensor? = nil, ignoreIndex: Int = -100, reduction: Reduction = .mean, labelSmoothing: Double = 0
    ) {
        self.weight = weight
        self.ignoreIndex = ignoreIndex
        self.reduction = reduction
        self.labelSmoothing = labelSmoothing
    }
    public func callAsFunction(_ p: Tensor, _ t: Tensor) -> Tensor {
        crossEntropy(
            p, t, weight: weight, ignoreIndex: ignoreIndex, reduction: reduction, labelSmoothing: labelSmoothing)
    }
    public func with(reduction: Reduction) -> CrossEntropyLoss { var c = self; c.reduction = reduction; return c }
    public func activation(_ output: Tensor) -> Tensor { output.softmax(dim: -1) }
    public func mismatch(output: [Int], target: Tensor) -> String? {
        classificationMismatch(output, target, "CrossEntropyLoss")
    }
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
    public func activation(_ output: Tensor) -> Tensor { output.exp() }
    public func mismatch(output: [Int], target: Tensor) -> String? { classificationMismatch(output, target, "NLLLoss") }
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
    public func activation(_ output: Tensor) -> Tensor { output.sigmoid() }
}
