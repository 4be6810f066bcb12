import Glibc
import SwiftAICore

/// A hyper-parameter value as a function of the training step `i` out of `n` steps.
///
/// fastai-style schedules (`cos`, `linear`, `exponential`, `combine`,
/// ``fastaiOneCycle(lrMax:div:divFinal:pctStart:moms:)``)
/// depend on the position `i / n`; PyTorch-style ones
/// (``oneCycleLR(maxLR:totalSteps:pctStart:divFactor:finalDivFactor:baseMomentum:maxMomentum:)``,
/// ``cosineAnnealing(base:tMax:etaMin:)``, ``stepDecay(base:stepSize:gamma:)``) on the step itself, exactly as
/// `torch.optim.lr_scheduler` computes them.
public struct Schedule {
    private let f: (Int, Int) -> Double

    /// A schedule from a closure of (step, total steps).
    public init(_ f: @escaping (_ step: Int, _ total: Int) -> Double) { self.f = f }

    /// A schedule from a closure of the position in [0, 1].
    public static func position(_ f: @escaping (Double) -> Double) -> Schedule {
        Schedule { i, n in f(n > 0 ? Double(i) / Double(n) : 0) }
    }

    /// The value at step `step` of `total`.
    public func callAsFunction(_ step: Int, _ total: Int) -> Double { f(step, total) }

    /// The value at position `pos` ∈ [0, 1] (evaluated as step `pos·10⁶` of 10⁶).
    public func at(_ pos: Double) -> Double { f(Int((pos * 1_000_000).rounded()), 1_000_000) }

    // MARK: fastai

    /// Cosine from `start` to `end` (fastai's `SchedCos`).
    public static func cos(_ start: Double, _ end: Double) -> Schedule {
        position { start + (1 + Glibc.cos(Double.pi * (1 - $0))) * (end - start) / 2 }
    }

    /// Straight line from `start` to `end` (`SchedLin`).
    public static func linear(_ start: Double, _ end: Double) -> Schedule { position { start + $0 * (end - start) } }

    /// Geometric from `start` to `end` (`SchedExp`).
    public static func exponential(_ start: Double, _ end: Double) -> Schedule {
        position { start * Glibc.pow(end / start, $0) }
    }

    /// Polynomial from `start` to `end` (`SchedPoly`).
    public static func poly(_ start: Double, _ end: Double, power: Double) -> Schedule {
        position { start + Glibc.pow($0, power) * (end - start) }
    }

    /// A constant.
    public static func constant(_ v: Double) -> Schedule { Schedule { _, _ in v } }

    /// Phases: `schedules[k]` runs over the fraction `pcts[k]` of training (fastai's `combine_scheds`).
    public static func combine(_ pcts: [Double], _ schedules: [Schedule]) -> Schedule {
        require(pcts.count == schedules.count && !pcts.isEmpty, "Schedule.combine: need one fraction per schedule")
        var bounds = [0.0]
        for p in pcts { bounds.append(bounds.last! + p) }
        return position { pos in
            if pos >= 1 { return schedules[schedules.count - 1].at(1) }
            let k = Swift.max(0, (0..<schedules.count).last { pos >= bounds[$0] } ?? 0)
            return schedules[k].at((pos - bounds[k]) / (bounds[k + 1] - bounds[k]))
        }
    }

    /// fastai's `fit_one_cycle` schedules: learning rate cos-warms from `lrMax/div` to `lrMax` over `pctStart`,
    /// then cos-anneals to `lrMax/divFinal`; momentum goes 0.95 → 0.85 → 0.95 on the same phases.
    public static func fastaiOneCycle(
        lrMax: Double, div: Double = 25, divFinal: Double = 1e5, pctStart: Double = 0.25,
        moms: (Double, Double, Double) = (0.95, 0.85, 0.95)
    ) -> (lr: Schedule, mom: Schedule) {
        (
            combine([pctStart, 1 - pctStart], [cos(lrMax / div, lrMax), cos(lrMax, lrMax / divFinal)]),
            combine([pctStart, 1 - pctStart], [cos(moms.0, moms.1), cos(moms.1, moms.2)])
        )
    }

    // MARK: PyTorch

    /// `torch.optim.lr_scheduler.OneCycleLR` (cosine annealing, two phases), learning rate and momentum (β₁).
    public static func oneCycleLR(
        maxLR: Double, totalSteps: Int, pctStart: Double = 0.3, divFactor: Double = 25,
        finalDivFactor: Double = 1e4, baseMomentum: Double = 0.85,
        maxMomentum: Double = 0.95
    ) -> (lr: Schedule, mom: Schedule) {
        let initial = maxLR / divFactor, minLR = initial / finalDivFactor
        let phases: [(end: Double, lr: (Double, Double), mom: (Double, Double))] = [
            (pctStart * Double(totalSteps) - 1, (initial, maxLR), (maxMomentum, baseMomentum)),
            (Double(totalSteps) - 1, (maxLR, minLR), (baseMomentum, maxMomentum))
        ]
        func anneal(_ a: Double, _ b: Double, _ pct: Double) -> Double {
            b + (a - b) / 2 * (Glibc.cos(Double.pi * pct) + 1)
        }
        func value(
            _ step: Int, _ pick: ((end: Double, lr: (Double, Double), mom: (Double, Double))) -> (Double, Double)
        ) -> Double {
            var start = 0.0
            for (k, ph) in phases.enumerated() {
                if Double(step) <= ph.end || k == phases.count - 1 {
                    let (a, b) = pick(ph)
                    return anneal(a, b, (Double(step) - start) / (ph.end - start))
                }
                start = ph.end
            }
            return 0
        }
        return (Schedule { i, _ in value(i) { $0.lr } }, Schedule { i, _ in value(i) { $0.mom } })
    }

    /// `CosineAnnealingLR`: `etaMin + (base − etaMin)·(1 + cos(π·t/tMax))/2`.
    public static func cosineAnnealing(base: Double, tMax: Int, etaMin: Double = 0) -> Schedule {
        Schedule { i, _ in etaMin + (base - etaMin) * (1 + Glibc.cos(Double.pi * Double(i) / Double(tMax))) / 2 }
    }

    /// `StepLR`: multiplied by `gamma` every `stepSize` steps.
    public static func stepDecay(base: Double, stepSize: Int, gamma: Double = 0.1) -> Schedule {
        Schedule { i, _ in base * Glibc.pow(gamma, Double(i / stepSize)) }
    }

    /// `ExponentialLR`: `base·gammaᵗ`.
    public static func exponentialDecay(base: Double, gamma: Double) -> Schedule {
        Schedule { i, _ in base * Glibc.pow(gamma, Double(i)) }
    }

    /// Linear warm-up from `start` to the value of `then` over `warmupSteps`, then `then` (on its own step count).
    public static func linearWarmup(steps warmupSteps: Int, from start: Double = 0, then: Schedule) -> Schedule {
        Schedule { i, n in
            if i >= warmupSteps { return then(i - warmupSteps, Swift.max(n - warmupSteps, 1)) }
            let target = then(0, Swift.max(n - warmupSteps, 1))
            return start + (target - start) * Double(i) / Double(warmupSteps)
        }
    }

    /// Runs `first` for `steps` steps, then `second` counting from 0 (phase composition by step count).
    public func then(after steps: Int, _ second: Schedule) -> Schedule {
        let first = self
        return Schedule { i, n in i < steps ? first(i, steps) : second(i - steps, Swift.max(n - steps, 1)) }
    }
}

extension Optimizer {
    /// Sets each scheduled hyper-parameter to its schedule's value at `step` of `total` — the one place a schedule
    /// is applied (``HyperScheduler``, and the Learner's `ParamScheduler` and `EpochScheduler`).
    public func set(_ schedules: [(WritableKeyPath<Hyper, Double>, Schedule)], step: Int, of total: Int) {
        for (key, s) in schedules { set(key, s(step, total)) }
    }
}

/// Drives optimizer hyper-parameters from schedules, one step at a time.
public final class HyperScheduler {
    public let optimizer: Optimizer
    public let schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]
    public let totalSteps: Int
    public private(set) var stepIndex = 0

    public init(_ optimizer: Optimizer, totalSteps: Int, _ schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]) {
        self.optimizer = optimizer
        self.totalSteps = totalSteps
        self.schedules = schedules
        apply()
    }

    /// Sets every scheduled hyper-parameter to its value for the current step.
    public func apply() { optimizer.set(schedules, step: stepIndex, of: totalSteps) }

    /// Moves to the next step and applies it (call after `optimizer.step()`).
    public func step() {
        stepIndex += 1
        apply()
    }
}
