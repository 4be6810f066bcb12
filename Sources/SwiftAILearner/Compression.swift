// Training-time compression: knowledge distillation (issue #12), keeping pruned weights pruned, removing channels.

import SwiftAICore
import SwiftAINN

/// Knowledge distillation's soft loss (Hinton et al. 2015): `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`,
/// averaged over the batch — PyTorch's `kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T*T`.
/// The `T²` keeps its gradients on the scale of the hard loss's as `T` changes. Only `student` gets gradients.
public func distillationLoss(student: Tensor, teacher: Tensor, temperature t: Double) -> Tensor {
    require(student.shape == teacher.shape && student.rank == 2,
            "distillationLoss: student \(student.shape) and teacher \(teacher.shape) logits must both be [N, classes]")
    require(t > 0, "distillationLoss: temperature \(t) must be positive")
    let target = (teacher.detached() / t).softmax(dim: -1)
    let kl = target * ((teacher.detached() / t).logSoftmax(dim: -1) - (student / t).logSoftmax(dim: -1))
    return kl.sum() * (t * t / Double(student.shape[0]))
}

/// Trains the learner's model (the student) towards a teacher's softened predictions as well as the labels:
/// `loss = (1 − α) · loss + α · distillationLoss(student, teacher, T)` on training batches; validation keeps the
/// plain loss. The teacher runs in evaluation mode without gradients.
public final class Distillation: CallbackBase {
    public let teacher: Module
    public let temperature: Double, alpha: Double

    public init(teacher: Module, temperature: Double = 4, alpha: Double = 0.5) {
        require(temperature > 0 && (0...1).contains(alpha), "Distillation: temperature \(temperature) must be positive and alpha \(alpha) in [0, 1]")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
    }

    public override func beforeFit(_ learn: Learner) throws { teacher.eval() }

    public override func afterLoss(_ learn: Learner) throws {
        guard learn.training, let preds = learn.preds, let loss = learn.loss else { return }
        let x = learn.batch.x
        let logits = noGrad { teacher(x) }
        learn.loss = loss * (1 - alpha) + distillationLoss(student: preds, teacher: logits, temperature: temperature) * alpha
    }
}

/// Keeps pruned weights at zero while fine-tuning (re-applies the masks after every optimizer step), as PyTorch's
/// pruning reparametrisation does; removing the callback leaves the pruning permanent.
public final class KeepPruned: CallbackBase {
    public let masks: PruningMasks

    public init(_ masks: PruningMasks) { self.masks = masks }

    public override func afterStep(_ learn: Learner) throws { masks.apply() }
}

extension Learner {
    /// Structured channel pruning of the model (``ModelSpec/pruneChannels(of:amount:)``): the smallest-L1 share
    /// `amount` of every prunable convolution's output channels is removed, ``modelSpec`` describes the narrower
    /// model, and the optimizer is dropped (its state has the old shapes) so the next fit makes a new one.
    /// - Throws: ``ModelSpecError`` when the model has no description or does not match it (e.g. it is fused).
    public func pruneChannels(amount: Double) throws {
        guard let spec = modelSpec else {
            throw ModelSpecError("the learner's model was not built from a description (visionLearner or a lesson model); set learn.modelSpec")
        }
        modelSpec = try spec.pruneChannels(of: model, amount: amount)
        opt = nil
    }
}
