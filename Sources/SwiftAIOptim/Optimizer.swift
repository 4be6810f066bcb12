import Glibc
import SwiftAICore
import SwiftAINN

/// Hyper-parameters of one parameter group; schedules change them between steps.
///
/// Names follow fastai: `mom` is SGD's momentum, Adam's β₁ and RMSProp's momentum; `sqrMom` is Adam's β₂ and
/// RMSProp's α (the squared-gradient smoothing); `wd` is weight decay (L2 for SGD/Adam/RMSProp, decoupled for AdamW).
public struct Hyper: Sendable, Equatable {
    public var lr: Double
    public var mom: Double
    public var sqrMom: Double
    public var eps: Double
    public var wd: Double
    public var dampening: Double
    public var nesterov: Bool

    public init(lr: Double, mom: Double = 0, sqrMom: Double = 0.99, eps: Double = 1e-8, wd: Double = 0,
                dampening: Double = 0, nesterov: Bool = false) {
        self.lr = lr
        self.mom = mom
        self.sqrMom = sqrMom
        self.eps = eps
        self.wd = wd
        self.dampening = dampening
        self.nesterov = nesterov
    }
}

/// Parameters that share hyper-parameters.
public struct ParamGroup {
    public var params: [Parameter]
    public var hyper: Hyper
    /// This group's learning rate relative to the one set with ``Optimizer/set(_:_:)`` (discriminative learning
    /// rates: a layer group's share of the last group's rate).
    public var lrMult = 1.0

    public init(_ params: [Parameter], _ hyper: Hyper) {
        self.params = params
        self.hyper = hyper
    }
}

/// Splits a model's parameters into (decayed, not decayed): BatchNorm parameters and biases go to the second,
/// fastai's `bn_wd=False` / `wd_bn_bias=False`.
public func weightDecaySplit(_ model: Module) -> (decay: [Parameter], noDecay: [Parameter]) {
    var noDecay = Set<ObjectIdentifier>()
    for m in model.modules() {
        for (name, p) in m.namedParameters() where !name.contains(".") {
            if m is BatchNorm || name == "bias" { noDecay.insert(ObjectIdentifier(p)) }
        }
    }
    let all = model.parameters()
    return (all.filter { !noDecay.contains(ObjectIdentifier($0)) }, all.filter { noDecay.contains(ObjectIdentifier($0)) })
}

/// Base optimizer: parameter groups, per-parameter state, `step()` and `zeroGrad()`.
///
/// Subclasses implement ``update(_:_:_:_:)`` for one parameter. Parameters without a gradient (frozen, or
/// unused in the last forward) are skipped. Updates run under `noGrad` and replace parameter values in place.
open class Optimizer {
    public var paramGroups: [ParamGroup]
    /// Per-parameter state (momentum buffers, moving averages, step counts).
    public var state: [ObjectIdentifier: [String: Tensor]] = [:]
    /// Steps taken.
    public private(set) var stepCount = 0

    public init(_ groups: [ParamGroup]) {
        paramGroups = groups
    }

    /// Runs one update of every parameter that has a gradient.
    public func step() {
        stepCount += 1
        noGrad {
            for group in paramGroups {
                for p in group.params {
                    guard let g = p.grad else { continue }
                    let id = ObjectIdentifier(p)
                    var st = state[id] ?? [:]
                    let new = update(p.value.detached(), g, &st, group.hyper)
                    state[id] = st
                    p.setData(new)
                }
            }
        }
        didStep()
    }

    /// New value of a parameter `w` with gradient `g` (state is this parameter's, kept between steps).
    open func update(_ w: Tensor, _ g: Tensor, _ state: inout [String: Tensor], _ h: Hyper) -> Tensor {
        fatalError("\(type(of: self)) must override update")
    }

    /// Called after every ``step()``.
    open func didStep() {}

    /// Clears every parameter's gradient.
    public func zeroGrad() {
        for group in paramGroups { for p in group.params { p.grad = nil } }
    }

    /// Sets a hyper-parameter in every group (the learning rate scaled by each group's ``ParamGroup/lrMult``).
    public func set(_ key: WritableKeyPath<Hyper, Double>, _ value: Double) {
        for i in paramGroups.indices { paramGroups[i].hyper[keyPath: key] = key == \Hyper.lr ? value * paramGroups[i].lrMult : value }
    }

    /// All parameters.
    public var parameters: [Parameter] { paramGroups.flatMap(\.params) }

    /// The per-parameter state (keyed by parameter identity), each group's hyper-parameters and the step count,
    /// to restore later in this process (`lrFind` uses it to leave the optimizer as it found it).
    public func stateSnapshot() -> (state: [ObjectIdentifier: [String: Tensor]], hypers: [Hyper], steps: Int) {
        (state, paramGroups.map(\.hyper), stepCount)
    }

    /// Restores a snapshot taken with ``stateSnapshot()``.
    public func restore(_ s: (state: [ObjectIdentifier: [String: Tensor]], hypers: [Hyper], steps: Int)) {
        state = s.state
        for (i, h) in s.hypers.enumerated() where i < paramGroups.count { paramGroups[i].hyper = h }
        stepCount = s.steps
    }
}

/// Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and (L2) weight decay.
public final class SGD: Optimizer {
    public override init(_ groups: [ParamGroup]) { super.init(groups) }

    public convenience init(_ params: [Parameter], lr: Double, momentum: Double = 0, dampening: Double = 0,
                            weightDecay: Double = 0, nesterov: Bool = false) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: momentum, wd: weightDecay, dampening: dampening, nesterov: nesterov))])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout [String: Tensor], _ h: Hyper) -> Tensor {
        var d = h.wd != 0 ? g + w * h.wd : g
        if h.mom != 0 {
            let buf = st["momentum_buffer"].map { $0 * h.mom + d * (1 - h.dampening) } ?? d
            st["momentum_buffer"] = buf
            d = h.nesterov ? d + buf * h.mom : buf
        }
        return w - d * h.lr
    }
}

/// RMSProp (PyTorch's, without centring): v = α·v + (1−α)·g²; w −= lr·g/(√v + ε), with optional momentum.
public final class RMSProp: Optimizer {
    public override init(_ groups: [ParamGroup]) { super.init(groups) }

    public convenience init(_ params: [Parameter], lr: Double = 0.01, alpha: Double = 0.99, eps: Double = 1e-8,
                            weightDecay: Double = 0, momentum: Double = 0) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: momentum, sqrMom: alpha, eps: eps, wd: weightDecay))])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout [String: Tensor], _ h: Hyper) -> Tensor {
        let d = h.wd != 0 ? g + w * h.wd : g
        let v = (st["square_avg"] ?? Tensor.zeros(like: w)) * h.sqrMom + d * d * (1 - h.sqrMom)
        st["square_avg"] = v
        let step = d / (v.sqrt() + h.eps)
        if h.mom > 0 {
            let buf = (st["momentum_buffer"] ?? Tensor.zeros(like: w)) * h.mom + step
            st["momentum_buffer"] = buf
            return w - buf * h.lr
        }
        return w - step * h.lr
    }
}

/// Adam (PyTorch's formula with bias correction). `decoupledWeightDecay` makes it AdamW.
public class Adam: Optimizer {
    let decoupled: Bool

    public init(_ groups: [ParamGroup], decoupledWeightDecay: Bool = false) {
        decoupled = decoupledWeightDecay
        super.init(groups)
    }

    public convenience init(_ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                            eps: Double = 1e-8, weightDecay: Double = 0) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: betas.0, sqrMom: betas.1, eps: eps, wd: weightDecay))])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout [String: Tensor], _ h: Hyper) -> Tensor {
        let t = (st["step"]?.item() ?? 0) + 1
        st["step"] = Tensor(scalar: t)
        let bc1 = 1 - Glibc.pow(h.mom, t), bc2 = 1 - Glibc.pow(h.sqrMom, t)
        if let r = Tensor.fusedAdamStep(weight: w, grad: g, expAvg: st["exp_avg"] ?? Tensor.zeros(like: w),
                                        expAvgSq: st["exp_avg_sq"] ?? Tensor.zeros(like: w), lr: h.lr,
                                        beta1: h.mom, beta2: h.sqrMom, eps: h.eps, weightDecay: h.wd,
                                        decoupled: decoupled, biasCorrection1: bc1, biasCorrection2: bc2) {
            st["exp_avg"] = r.expAvg
            st["exp_avg_sq"] = r.expAvgSq
            return r.weight
        }
        var w = w
        var grad = g
        if h.wd != 0 {
            if decoupled { w = w * (1 - h.lr * h.wd) } else { grad = g + w * h.wd }
        }
        let m = (st["exp_avg"] ?? Tensor.zeros(like: w)) * h.mom + grad * (1 - h.mom)
        let v = (st["exp_avg_sq"] ?? Tensor.zeros(like: w)) * h.sqrMom + grad * grad * (1 - h.sqrMom)
        st["exp_avg"] = m
        st["exp_avg_sq"] = v
        let denom = v.sqrt() / bc2.squareRoot() + h.eps
        return w - m / denom * (h.lr / bc1)
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's `AdamW`.
public final class AdamW: Adam {
    public init(_ groups: [ParamGroup]) { super.init(groups, decoupledWeightDecay: true) }

    public convenience init(_ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                            eps: Double = 1e-8, weightDecay: Double = 0.01) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: betas.0, sqrMom: betas.1, eps: eps, wd: weightDecay))])
    }

    /// fastai's defaults: mom 0.9, sqr_mom 0.99, eps 1e-5, wd 0.01. With `model`, BatchNorm and bias parameters
    /// get no weight decay unless `decayNormAndBias`.
    public static func fastai(_ model: Module, lr: Double, wd: Double = 0.01, decayNormAndBias: Bool = false) -> AdamW {
        let base = Hyper(lr: lr, mom: 0.9, sqrMom: 0.99, eps: 1e-5, wd: wd)
        if decayNormAndBias { return AdamW([ParamGroup(model.parameters(), base)]) }
        let (decay, noDecay) = weightDecaySplit(model)
        var plain = base
        plain.wd = 0
        return AdamW([ParamGroup(decay, base), ParamGroup(noDecay, plain)].filter { !$0.params.isEmpty })
    }
}

/// The lesson's automatic annealer: Adam whose learning rate is divided by `factor` (4) every time the
/// average of the (bias-corrected) squared-gradient moving averages falls to half of its low-water mark
/// (its value when the rate last changed, or at the first step).
public final class AutoAnnealAdam: Adam {
    public let factor: Double
    /// The squared-gradient average that must halve before the next decrease.
    public private(set) var mark: Double?
    /// The most recent squared-gradient average.
    public private(set) var lastAverage: Double = 0

    public init(_ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                factor: Double = 4) {
        self.factor = factor
        super.init([ParamGroup(params, Hyper(lr: lr, mom: betas.0, sqrMom: betas.1, eps: eps))])
    }

    public override func didStep() {
        var total = 0.0, n = 0
        for group in paramGroups {
            for p in group.params {
                guard let st = state[ObjectIdentifier(p)], let v = st["exp_avg_sq"], let t = st["step"]?.item() else { continue }
                total += v.sum().item() / (1 - Glibc.pow(group.hyper.sqrMom, t))  // bias-corrected, as Adam's step uses it
                n += v.count
            }
        }
        guard n > 0 else { return }
        lastAverage = total / Double(n)
        guard let m = mark else { mark = lastAverage; return }
        if lastAverage <= m / 2 {
            for i in paramGroups.indices { paramGroups[i].hyper.lr /= factor }
            mark = lastAverage
        }
    }
}
