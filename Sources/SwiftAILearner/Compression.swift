// Training-time compression (issue #12): knowledge distillation, keeping pruned weights pruned, removing channels,
// int8 quantization.

import SwiftAICore
import SwiftAIData
import SwiftAINN

/// Knowledge distillation's soft loss (Hinton et al. 2015): `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`,
/// averaged over the batch — PyTorch's `kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T*T`.
/// The `T²` keeps its gradients on the scale of the hard loss's as `T` changes. Only `student` gets gradients.
public func distillationLoss(student: Tensor, teacher: Tensor, temperature t: Double) -> Tensor {
    require(
        student.shape == teacher.shape && student.rank == 2,
        "distillationLoss: student \(student.shape) and teacher \(teacher.shape) logits must both be [N, classes]")
    require(t > 0, "distillationLoss: temperature \(t) must be positive")
    let target = (teacher.detached() / t).softmax(dim: -1)
    let kl = target * ((teacher.detached() / t).logSoftmax(dim: -1) - (student / t).logSoftmax(dim: -1))
    return kl.sum() * (t * t / Double(student.shape[0]))
}

/// Trains the learner's model (the student) towards a teacher's softened predictions as well as the labels:
/// `loss = (1 − α) · loss + α · distillationLoss(student, teacher, T)` on training batches; validation keeps the
/// plain loss. The teacher runs in evaluation mode without gradients.
public final class Distillation: Callback {
    public let teacher: Module
    public let temperature: Double, alpha: Double

    public init(teacher: Module, temperature: Double = 4, alpha: Double = 0.5) {
        require(
            temperature > 0 && (0...1).contains(alpha),
            "Distillation: temperature \(temperature) must be positive and alpha \(alpha) in [0, 1]")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
    }

    public override func beforeFit(_ learn: Learner) throws { teacher.eval() }

    public override func afterLoss(_ learn: Learner) throws {
        guard learn.training, let preds = learn.preds, let loss = learn.loss else { return }
        let x = learn.batch.x
        let logits = noGrad { teacher(x) }
        learn.loss =
            loss * (1 - alpha) + distillationLoss(student: preds, teacher: logits, temperature: temperature) * alpha
    }
}

/// Keeps pruned weights at zero while fine-tuning (re-applies the masks after every optimizer step), as PyTorch's
/// pruning reparametrisation does; removing the callback leaves the pruning permanent.
public final class KeepPruned: Callback {
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
            throw ModelSpecError(
                """
                the learner's model was not built from a description (visionLearner or a lesson model); set \
                learn.modelSpec
                """
            )
        }
        modelSpec = try spec.pruneChannels(of: model, amount: amount)
        opt = nil
    }
}

/// Calibration data that cannot calibrate this model.
public enum CompressionError: Error, CustomStringConvertible, Equatable {
    case calibration(String)

    public var description: String {
        switch self {
        case let .calibration(why): return "calibration: \(why)"
        }
    }
}

extension Learner {
    /// Static int8 post-training quantization: the first `batches` batches of `dl` (their inputs; use loaders
    /// without augmentation) calibrate the activation ranges. Returns a learner for the int8 ``QuantizedModel``
    /// (inference only: `getPreds`, `predict`, `export`) with this one's loaders, loss and description; this
    /// learner's model is unchanged. `inputShape` (`[C, H, W]`) is checked against the first batch before any
    /// work, as is the channel count of the model's first convolution.
    public func quantized(
        calibration dl: DataLoader, batches: Int = 32, observer: ActivationObserver = .histogram,
        inputShape: [Int]? = nil
    ) throws -> Learner {
        guard batches > 0, dl.count > 0 else {
            throw CompressionError.calibration(
                "no calibration batches (\(dl.itemCount) items for batch size \(dl.batchSize))")
        }
        let x = try dl.first().x
        let item = Array(x.shape.dropFirst())
        if let inputShape, item != inputShape {
            throw CompressionError.calibration(
                "the calibration images are \(item) but the model takes \(inputShape) inputs")
        }
        if let conv = model.modules().first(where: { $0 is Conv2d }) as? Conv2d, x.rank == 4,
            x.shape[1] != conv.weight.shape[1] * conv.groups
        {
            throw CompressionError.calibration(
                """
                the calibration images have \(x.shape[1]) channels but the model's first convolution takes \
                \(conv.weight.shape[1] * conv.groups)
                """
            )
        }
        // In a distributed job each rank loads (decodes) its shard of the calibration batches; the inputs are gathered
        // in order, so every rank calibrates on all of them, in the batches one process would use.
        let gathered = try group.size > 1 ? calibrationInputs(dl, batches: batches) : nil
        var failure: Error?
        let q = try model.quantizedStatic(observer: observer) { run in
            if let gathered {
                for start in stride(from: 0, to: gathered.shape[0], by: dl.batchSize) {
                    run(gathered[start..<Swift.min(gathered.shape[0], start + dl.batchSize)])
                }
                return
            }
            guard failure == nil else { return }
            let it = dl.makeIterator()
            do {
                for _ in 0..<Swift.min(batches, dl.count) {
                    guard let b = try it.nextBatch() else { break }
                    run(b.x)
                }
            } catch { failure = error }
        }
        if let failure { throw failure }
        return inferenceLearner(q)
    }

    /// The first `batches` batches' inputs of `dl`: each rank loads its shard of the loader's items, and the shards
    /// are gathered in order on every rank.
    private func calibrationInputs(_ dl: DataLoader, batches: Int) throws -> Tensor {
        guard dl.itemCount >= group.size else {
            throw CompressionError.calibration(
                "\(dl.itemCount) calibration images cannot be shared by \(group.size) processes")
        }
        let saved = dl.shard
        dl.shard = .init(rank: group.rank, count: group.size, padded: false)
        defer { dl.shard = saved }
        var xs: [Tensor] = []
        let it = dl.makeIterator()
        while let b = try it.nextBatch() { xs.append(b.x) }
        return gatherShards(Tensor.cat(xs), loader: dl)[0..<Swift.min(dl.itemCount, batches * dl.batchSize)]
    }

    /// Dynamic int8 quantization: linear layers get int8 weights and quantize their inputs per batch; the rest runs
    /// fused in float32. Returns a learner for the ``QuantizedModel`` as
    /// ``quantized(calibration:batches:observer:inputShape:)``.
    public func quantizedDynamic() throws -> Learner { inferenceLearner(try model.quantizedDynamic()) }

    private func inferenceLearner(_ q: QuantizedModel) -> Learner {
        let learn = Learner(model: q, dls: dls, lossFunc: lossFunc, metrics: recorder.metrics, progress: false)
        learn.modelSpec = modelSpec
        return learn
    }
}

extension Learner {
    /// Quantization-aware training: prepares this learner's model (``Module/prepareQAT(qmax:)``); train it with
    /// `fit`/`fitOneCycle` as usual, then ``quantized(from:)``.
    public func prepareQAT() -> QuantizationAwareTraining { model.prepareQAT() }

    /// A learner for the int8 model that quantization-aware training converts to (see
    /// ``quantized(calibration:batches:observer:inputShape:)``).
    public func quantized(from qat: QuantizationAwareTraining) throws -> Learner { inferenceLearner(try qat.convert()) }
}
