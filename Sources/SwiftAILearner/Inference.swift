import SwiftAICore
import SwiftAIData

extension Learner {
    /// fastai's `tta`: `n` passes over the validation set (or `dl`) with the training transforms, averaged, then
    /// `lerp(augmented, plain, beta)` with a plain pass (`beta: nil` keeps the augmented mean alone).
    ///
    /// `transforms` replaces the training transforms of the augmented passes: the loader's evaluation path is
    /// followed by these, applied as in training — e.g. the lesson's flip TTA, the mean of the plain and the
    /// mirrored predictions, is `tta(n: 1, beta: 0.5, transforms: [RandomFlip(p: 1)])`.
    public func tta(
        _ dl: DataLoader? = nil, n: Int = 4, beta: Double? = 0.25,
        transforms: [BatchTransform]? = nil
    ) throws -> (preds: Tensor, targets: Tensor) {
        let base = dl ?? dls.valid
        var sum: Tensor?
        for i in 0..<n {
            let seed = base.seed &+ UInt64(i) &+ 1
            let augmented: DataLoader
            if let transforms {
                augmented = base.new(seed: seed, training: false)
                augmented.addBatchTransforms(transforms.map { AsInTraining(inner: $0) })
            } else {
                augmented = base.new(seed: seed, training: true)
            }
            let p = try getPreds(augmented).preds
            sum = sum.map { $0 + p } ?? p
        }
        let (plain, targets) = try getPreds(base.new(training: false))
        guard let sum else { return (plain, targets) }
        let aug = sum / Double(n)
        guard let beta else { return (aug, targets) }
        return (aug + (plain - aug) * beta, targets)
    }
}

/// A transform that takes its training path on any loader (for ``Learner/tta(_:n:beta:transforms:)``).
private struct AsInTraining: BatchTransform {
    let inner: BatchTransform
    var order: Int { inner.order }
    var description: String { inner.description }
    func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        inner.apply(batch, generator: generator, training: true)
    }
}

/// The mean of several learners' predicted probabilities on `dl` of each (default: their validation sets), with
/// the targets of the first — the lesson's ensemble.
public func ensemblePreds(_ learners: [Learner], dl: DataLoader? = nil, tta: Bool = false) throws -> (
    preds: Tensor, targets: Tensor
) {
    require(!learners.isEmpty, "ensemblePreds: no learners")
    var sum: Tensor?, targets: Tensor?
    for learn in learners {
        let (p, t) = tta ? try learn.tta(dl) : try learn.getPreds(dl)
        sum = sum.map { $0 + p } ?? p
        targets = targets ?? t
    }
    return (sum! / Double(learners.count), targets!)
}
