import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// A learning rate for every layer group: one value, or fastai's `slice` (discriminative learning rates).
///
/// `0.01` gives every group 0.01; `.slice(1e-6, 1e-4)` spreads geometrically from the first group to the last;
/// `.slice(upTo: 1e-3)` gives the last group 1e-3 and every other group a tenth of it (fastai's `slice(stop)`).
public struct LearningRate: ExpressibleByFloatLiteral, CustomStringConvertible, Equatable, Sendable {
    public let start: Double?
    public let stop: Double
    let tenthBelowLast: Bool

    public init(_ value: Double) { start = nil; stop = value; tenthBelowLast = false }
    public init(floatLiteral value: Double) { self.init(value) }
    private init(start: Double?, stop: Double, tenth: Bool) {
        self.start = start; self.stop = stop; tenthBelowLast = tenth
    }

    /// Geometric from `start` (first group) to `stop` (last group), fastai's `slice(start, stop)`.
    public static func slice(_ start: Double, _ stop: Double) -> LearningRate {
        LearningRate(start: start, stop: stop, tenth: false)
    }
    /// `stop / 10` for all groups but the last, fastai's `slice(stop)`.
    public static func slice(upTo stop: Double) -> LearningRate { LearningRate(start: nil, stop: stop, tenth: true) }

    /// Every group's rate multiplied by `k` (e.g. the linear scaling rule of data-parallel training).
    public func scaled(by k: Double) -> LearningRate {
        LearningRate(start: start.map { $0 * k }, stop: stop * k, tenth: tenthBelowLast)
    }

    /// One value per group (fastai's `even_mults` for a slice).
    public func values(groups n: Int) -> [Double] {
        guard n > 1 else { return [stop] }
        if let start {
            let step = pow(stop / start, 1 / Double(n - 1))
            return (0..<n).map { start * pow(step, Double($0)) }
        }
        return tenthBelowLast ? Array(repeating: stop / 10, count: n - 1) + [stop] : Array(repeating: stop, count: n)
    }

    public var description: String {
        if let start { return "slice(\(start), \(stop))" }
        return tenthBelowLast ? "slice(upTo: \(stop))" : "\(stop)"
    }
}

extension Learner {
    /// The model's parameters in layer groups (fastai's `splitter`; one group unless ``splitter`` says otherwise).
    public var layerGroups: [[Parameter]] { splitter?(model) ?? [model.parameters()] }

    /// Freezes every layer group before `n` (negative counts from the end), as fastai's `freeze_to`: their
    /// parameters stop training, except BatchNorm's (fastai's `train_bn`); the optimizer's state is cleared.
    public func freezeTo(_ n: Int) {
        let groups = layerGroups
        let cut = n >= 0 ? Swift.min(n, groups.count) : Swift.max(groups.count + n, 0)
        let norm = Set(
            model.modules().filter { $0 is BatchNorm }.flatMap { $0.parameters() }.map(ObjectIdentifier.init))
        for (i, g) in groups.enumerated() {
            for p in g { p.requiresGrad = i >= cut || norm.contains(ObjectIdentifier(p)) }
        }
        opt?.resetState()
    }

    /// Freezes all layer groups but the last (the head), fastai's `freeze`.
    public func freeze() { freezeTo(-1) }

    /// Makes every parameter trainable again, fastai's `unfreeze`.
    public func unfreeze() { freezeTo(0) }

    /// Spreads `lr` over the layer groups: every optimizer group's parameters are split by layer group, each part
    /// scaled by its group's share of the last group's rate (schedules then scale all groups together).
    func applyLearningRate(_ lr: LearningRate) {
        guard let opt else { return }
        let groups = layerGroups
        let values = lr.values(groups: groups.count)
        var groupOf: [ObjectIdentifier: Int] = [:]
        for (i, g) in groups.enumerated() { for p in g { groupOf[ObjectIdentifier(p)] = i } }
        var split: [ParamGroup] = []
        for pg in opt.paramGroups {
            for i in values.indices {
                let params = pg.params.filter { (groupOf[ObjectIdentifier($0)] ?? groups.count - 1) == i }
                guard !params.isEmpty else { continue }
                var g = ParamGroup(params, pg.hyper)
                g.lrMult = values[i] / lr.stop
                split.append(g)
            }
        }
        opt.paramGroups = split
        opt.set(\.lr, lr.stop)
    }

    /// ``fit(_:lr:train:valid:callbacks:resetOpt:)`` with a learning rate per layer group.
    public func fit(_ nEpochs: Int, lr: LearningRate, callbacks extra: [Callback] = [], resetOpt: Bool = false) throws {
        try fit(nEpochs, lr: lr.stop, callbacks: [DiscriminativeLR(lr)] + extra, resetOpt: resetOpt)
    }

    /// ``fitOneCycle(_:lrMax:div:divFinal:pctStart:moms:callbacks:resetOpt:)`` with a learning rate per layer group
    /// (each group follows the cycle scaled to its own maximum, as fastai).
    public func fitOneCycle(
        _ nEpochs: Int, lrMax: LearningRate, div: Double = 25, divFinal: Double = 1e5, pctStart: Double = 0.25,
        moms: (Double, Double, Double) = (0.95, 0.85, 0.95), callbacks extra: [Callback] = [],
        resetOpt: Bool = false
    ) throws {
        try fitOneCycle(
            nEpochs, lrMax: lrMax.stop, div: div, divFinal: divFinal, pctStart: pctStart, moms: moms,
            callbacks: [DiscriminativeLR(lrMax)] + extra, resetOpt: resetOpt)
    }

    /// fastai's `fine_tune`: `freezeEpochs` of one-cycle on the head (`slice(upTo: baseLr)`, pctStart 0.99), then
    /// everything unfrozen for `epochs` with `slice(baseLr/2/lrMult, baseLr/2)`, `pctStart` and `div`.
    public func fineTune(
        _ epochs: Int, baseLr: Double = 2e-3, freezeEpochs: Int = 1, lrMult: Double = 100,
        pctStart: Double = 0.3, div: Double = 5, callbacks extra: [Callback] = []
    ) throws {
        freeze()
        if freezeEpochs > 0 {
            try fitOneCycle(freezeEpochs, lrMax: .slice(upTo: baseLr), pctStart: 0.99, callbacks: extra)
        }
        let lr = baseLr / 2
        unfreeze()
        try fitOneCycle(epochs, lrMax: .slice(lr / lrMult, lr), div: div, pctStart: pctStart, callbacks: extra)
    }
}

/// Splits the optimizer's groups by layer group before a fit starts (after the optimizer exists).
final class DiscriminativeLR: Callback {
    let lr: LearningRate
    init(_ lr: LearningRate) { self.lr = lr }
    override var order: Int { -20 }
    override func beforeFit(_ learn: Learner) { learn.applyLearningRate(lr) }
}
