import SwiftAICore
import SwiftAIData

extension Learner {
    /// fastai's `tta`: `n` passes over the validation set (or `dl`) with the training transforms, averaged, then
    /// `lerp(augmented, plain, beta)` with a plain pass (`beta: nil` keeps the augmented mean alone).
    public func tta(_ dl: DataLoader? = nil, n: Int = 4, beta: Double? = 0.25) throws -> (preds: Tensor, targets: Tensor) {
        let base = dl ?? dls.valid
        var sum: Tensor?
        for i in 0..<n {
            let augmented = base.new(seed: base.seed &+ UInt64(i) &+ 1, training: true)
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

/// The mean of several learners' predicted probabilities on `dl` of each (default: their validation sets), with
/// the targets of the first — the lesson's ensemble.
public func ensemblePreds(_ learners: [Learner], dl: DataLoader? = nil, tta: Bool = false) throws -> (preds: Tensor, targets: Tensor) {
    require(!learners.isEmpty, "ensemblePreds: no learners")
    var sum: Tensor?, targets: Tensor?
    for learn in learners {
        let (p, t) = tta ? try learn.tta(dl) : try learn.getPreds(dl)
        sum = sum.map { $0 + p } ?? p
        targets = targets ?? t
    }
    return (sum! / Double(learners.count), targets!)
}
