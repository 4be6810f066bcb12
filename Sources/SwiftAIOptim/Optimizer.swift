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

    public init(
        lr: Double, mom: Double = 0, sqrMom: Double = 0.99, eps: Double = 1e-8, wd: Double = 0,
        dampening: Double = 0, nesterov: Bool = false
    ) {
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
    return (
        all.filter { !noDecay.contains(ObjectIdentifier($0)) }, all.filter { noDecay.contains(ObjectIdentifier($0)) }
    )
}

/// Base optimizer: parameter groups, per-parameter state, `step()` and `zeroGrad()`.
///
/// Optimizers subclass ``StatefulOptimizer`` with their state type. Parameters without a gradient (frozen, or
/// unused in the last forward) are skipped. Updates run under `noGrad` and replace parameter values in place.
/// State is kept by parameter identity, as PyTorch's (regrouping parameters keeps it); ``stateDict()`` numbers
/// parameters over the groups in order.
open class Optimizer {
    /// The groups; parameters removed from them lose their state.
    public var paramGroups: [ParamGroup] { didSet { forgetRemovedParameters() } }
    /// Steps taken.
    public internal(set) var stepCount = 0
    /// Per-parameter state, by parameter identity (every value is a `stateType`).
    var perParameter: [ObjectIdentifier: any OptimizerState] = [:]
    let stateType: any OptimizerState.Type

    init(_ groups: [ParamGroup], stateType: any OptimizerState.Type) {
        paramGroups = groups
        self.stateType = stateType
    }

    /// Runs one update of every parameter that has a gradient.
    public func step() {
        stepCount += 1
        noGrad {
            for group in paramGroups {
                for p in group.params {
                    guard let g = p.grad else { continue }
                    update(p, g, group.hyper)
                }
            }
        }
        didStep()
    }

    /// Updates one parameter and its state (``StatefulOptimizer`` implements it).
    func update(_ p: Parameter, _ g: Tensor, _ h: Hyper) {
        fatalError("\(type(of: self)) must subclass StatefulOptimizer")
    }

    /// Called after every ``step()``.
    open func didStep() {}

    /// Clears every parameter's gradient.
    public func zeroGrad() {
        for group in paramGroups { for p in group.params { p.grad = nil } }
    }

    /// Sets a hyper-parameter in every group (the learning rate scaled by each group's ``ParamGroup/lrMult``).
    public func set(_ key: WritableKeyPath<Hyper, Double>, _ value: Double) {
        for i in paramGroups.indices {
            paramGroups[i].hyper[keyPath: key] = key == \Hyper.lr ? value * paramGroups[i].lrMult : value
        }
    }

    /// All parameters.
    public var parameters: [Parameter] { paramGroups.flatMap(\.params) }

    /// Whether any parameter has state (momentum buffers, moving averages, step counts).
    public var hasState: Bool { !perParameter.isEmpty }

    /// Forgets every parameter's state (the next step starts as the first did); hyper-parameters stay.
    public func resetState() { perParameter = [:] }

    /// The per-parameter state (by parameter identity), each group's hyper-parameters and the step count, to
    /// restore later in this process (`lrFind` uses it to leave the optimizer as it found it).
    public func stateSnapshot() -> OptimizerSnapshot {
        OptimizerSnapshot(state: perParameter, hypers: paramGroups.map(\.hyper), steps: stepCount, extra: extraState)
    }

    /// Restores a snapshot taken with ``stateSnapshot()``.
    public func restore(_ s: OptimizerSnapshot) {
        for (i, h) in s.hypers.enumerated() where i < paramGroups.count { paramGroups[i].hyper = h }
        perParameter = s.state
        forgetRemovedParameters()
        stepCount = s.steps
        restoreExtra(s.extra)
    }

    /// The optimizer's name in saved state (its type's: `AdamW`, `SGD`, …); loading checks it.
    public var kind: String { String(describing: type(of: self)) }

    /// Writes the hyper-parameters other than `lr` and `weight_decay` under PyTorch's names (here every
    /// ``Hyper`` field, with RMSProp's names for `mom` and `sqrMom`; the optimizers write their own).
    func encode(_ h: Hyper, into g: inout OptimizerMetadata.Group) {
        g.momentum = h.mom
        g.alpha = h.sqrMom
        g.eps = h.eps
        g.dampening = h.dampening
        g.nesterov = h.nesterov
    }

    /// Reads back what ``encode(_:into:)`` wrote; throws naming a missing or unusable entry.
    func decode(_ g: OptimizerMetadata.Group, index: Int, into h: inout Hyper) throws {
        h.mom = try g.required(\.momentum, "momentum", group: index)
        h.sqrMom = try g.required(\.alpha, "alpha", group: index)
        h.eps = try g.required(\.eps, "eps", group: index)
        h.dampening = try g.required(\.dampening, "dampening", group: index)
        h.nesterov = try g.required(\.nesterov, "nesterov", group: index)
    }

    /// Optimizer-specific numbers saved with the state (``AutoAnnealAdam``'s mark).
    var extraState: [String: Double] { [:] }

    /// Takes back ``extraState`` (absent entries reset).
    func restoreExtra(_ extra: [String: Double]) {}

    private func forgetRemovedParameters() {
        guard !perParameter.isEmpty else { return }
        let live = Set(parameters.map(ObjectIdentifier.init))
        if perParameter.keys.contains(where: { !live.contains($0) }) {
            perParameter = perParameter.filter { live.contains($0.key) }
        }
    }
}

/// What ``Optimizer/stateSnapshot()`` returns: state by parameter identity, for ``Optimizer/restore(_:)``.
public struct OptimizerSnapshot {
    let state: [ObjectIdentifier: any OptimizerState]
    let hypers: [Hyper]
    let steps: Int
    let extra: [String: Double]
}

/// An optimizer whose per-parameter state is a `State`: subclasses implement ``update(_:_:_:_:)``.
open class StatefulOptimizer<State: OptimizerState>: Optimizer {
    public init(_ groups: [ParamGroup]) { super.init(groups, stateType: State.self) }

    /// `p`'s state (nil before its first update).
    public func state(for p: Parameter) -> State? { perParameter[ObjectIdentifier(p)] as? State }

    /// New value of a parameter `w` with gradient `g` (state is this parameter's, kept between steps).
    open func update(_ w: Tensor, _ g: Tensor, _ state: inout State, _ h: Hyper) -> Tensor {
        fatalError("\(type(of: self)) must override update")
    }

    override func update(_ p: Parameter, _ g: Tensor, _ h: Hyper) {
        let id = ObjectIdentifier(p)
        var st = perParameter[id] as? State ?? State()
        let new = update(p.value.detached(), g, &st, h)
        perParameter[id] = st
        p.setData(new)
    }
}

/// SGD's state for one parameter.
public struct SGDState: OptimizerState {
    /// PyTorch's `momentum_buffer` (nil without momentum).
    public var momentumBuffer: Tensor?

    public init() {}

    public init(from saved: inout SavedOptimizerState) { momentumBuffer = saved.take("momentum_buffer") }

    public var saved: SavedOptimizerState {
        SavedOptimizerState(tensors: momentumBuffer.map { ["momentum_buffer": $0] } ?? [:])
    }
}

/// Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and (L2) weight decay.
public final class SGD: StatefulOptimizer<SGDState> {
    public override init(_ groups: [ParamGroup]) { super.init(groups) }

    public convenience init(
        _ params: [Parameter], lr: Double, momentum: Double = 0, dampening: Double = 0,
        weightDecay: Double = 0, nesterov: Bool = false
    ) {
        self.init([
            ParamGroup(
                params,
                Hyper(
                    lr: lr, mom: momentum, wd: weightDecay, dampening: dampening,
                    nesterov: nesterov))
        ])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout SGDState, _ h: Hyper) -> Tensor {
        var d = h.wd != 0 ? g + w * h.wd : g
        if h.mom != 0 {
            let buf = st.momentumBuffer.map { $0 * h.mom + d * (1 - h.dampening) } ?? d
            st.momentumBuffer = buf
            d = h.nesterov ? d + buf * h.mom : buf
        }
        return w - d * h.lr
    }

    override func encode(_ h: Hyper, into g: inout OptimizerMetadata.Group) {
        g.momentum = h.mom
        g.dampening = h.dampening
        g.nesterov = h.nesterov
    }

    override func decode(_ g: OptimizerMetadata.Group, index: Int, into h: inout Hyper) throws {
        h.mom = try g.required(\.momentum, "momentum", group: index)
        h.dampening = try g.required(\.dampening, "dampening", group: index)
        h.nesterov = try g.required(\.nesterov, "nesterov", group: index)
    }
}

/// RMSProp's state for one parameter.
public struct RMSPropState: OptimizerState {
    /// Updates made (PyTorch's `step`).
    public var step = 0
    /// The squared-gradient moving average (`square_avg`).
    public var squareAvg: Tensor?
    /// PyTorch's `momentum_buffer` (nil without momentum).
    public var momentumBuffer: Tensor?

    public init() {}

    public init(from saved: inout SavedOptimizerState) throws {
        step = try saved.requiredStep()
        squareAvg = try saved.required("square_avg")
        momentumBuffer = saved.take("momentum_buffer")
    }

    public var saved: SavedOptimizerState {
        let tensors = ["square_avg": squareAvg, "momentum_buffer": momentumBuffer].compactMapValues { $0 }
        return SavedOptimizerState(tensors: tensors, step: step)
    }
}

/// RMSProp (PyTorch's, without centring): v = α·v + (1−α)·g²; w −= lr·g/(√v + ε), with optional momentum.
public final class RMSProp: StatefulOptimizer<RMSPropState> {
    public override init(_ groups: [ParamGroup]) { super.init(groups) }

    public convenience init(
        _ params: [Parameter], lr: Double = 0.01, alpha: Double = 0.99, eps: Double = 1e-8,
        weightDecay: Double = 0, momentum: Double = 0
    ) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: momentum, sqrMom: alpha, eps: eps, wd: weightDecay))])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout RMSPropState, _ h: Hyper) -> Tensor {
        st.step += 1
        let d = h.wd != 0 ? g + w * h.wd : g
        let v = (st.squareAvg ?? Tensor.zeros(like: w)) * h.sqrMom + d * d * (1 - h.sqrMom)
        st.squareAvg = v
        let step = d / (v.sqrt() + h.eps)
        if h.mom > 0 {
            let buf = (st.momentumBuffer ?? Tensor.zeros(like: w)) * h.mom + step
            st.momentumBuffer = buf
            return w - buf * h.lr
        }
        return w - step * h.lr
    }

    override func encode(_ h: Hyper, into g: inout OptimizerMetadata.Group) {
        g.alpha = h.sqrMom
        g.eps = h.eps
        g.momentum = h.mom
    }

    override func decode(_ g: OptimizerMetadata.Group, index: Int, into h: inout Hyper) throws {
        h.sqrMom = try g.required(\.alpha, "alpha", group: index)
        h.eps = try g.required(\.eps, "eps", group: index)
        h.mom = try g.required(\.momentum, "momentum", group: index)
    }
}

/// Adam's (and AdamW's) state for one parameter.
public struct AdamState: OptimizerState {
    /// Updates made (PyTorch's `step`; the bias corrections use it).
    public var step = 0
    /// The gradient moving average (`exp_avg`).
    public var expAvg: Tensor?
    /// The squared-gradient moving average (`exp_avg_sq`).
    public var expAvgSq: Tensor?

    public init() {}

    public init(from saved: inout SavedOptimizerState) throws {
        step = try saved.requiredStep()
        expAvg = try saved.required("exp_avg")
        expAvgSq = try saved.required("exp_avg_sq")
    }

    public var saved: SavedOptimizerState {
        SavedOptimizerState(tensors: ["exp_avg": expAvg, "exp_avg_sq": expAvgSq].compactMapValues { $0 }, step: step)
    }
}

/// Adam (PyTorch's formula with bias correction). `decoupledWeightDecay` makes it AdamW.
public class Adam: StatefulOptimizer<AdamState> {
    let decoupled: Bool

    public init(_ groups: [ParamGroup], decoupledWeightDecay: Bool = false) {
        decoupled = decoupledWeightDecay
        super.init(groups)
    }

    public convenience init(
        _ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
        eps: Double = 1e-8, weightDecay: Double = 0
    ) {
        self.init([ParamGroup(params, Hyper(lr: lr, mom: betas.0, sqrMom: betas.1, eps: eps, wd: weightDecay))])
    }

    public override func update(_ w: Tensor, _ g: Tensor, _ st: inout AdamState, _ h: Hyper) -> Tensor {
        st.step += 1
        let t = Double(st.step)
        let bc1 = 1 - Glibc.pow(h.mom, t), bc2 = 1 - Glibc.pow(h.sqrMom, t)
        if let r = Tensor.fusedAdamStep(
            weight: w, grad: g, expAvg: st.expAvg ?? Tensor.zeros(like: w),
            expAvgSq: st.expAvgSq ?? Tensor.zeros(like: w), lr: h.lr,
            beta1: h.mom, beta2: h.sqrMom, eps: h.eps, weightDecay: h.wd,
            decoupled: decoupled, biasCorrection1: bc1, biasCorrection2: bc2)
        {
            st.expAvg = r.expAvg
            st.expAvgSq = r.expAvgSq
            return r.weight
        }
        var w = w
        var grad = g
        if h.wd != 0 {
            if decoupled { w = w * (1 - h.lr * h.wd) } else { grad = g + w * h.wd }
        }
        let m = (st.expAvg ?? Tensor.zeros(like: w)) * h.mom + grad * (1 - h.mom)
        let v = (st.expAvgSq ?? Tensor.zeros(like: w)) * h.sqrMom + grad * grad * (1 - h.sqrMom)
        st.expAvg = m
        st.expAvgSq = v
        let denom = v.sqrt() / bc2.squareRoot() + h.eps
        return w - m / denom * (h.lr / bc1)
    }

    override func encode(_ h: Hyper, into g: inout OptimizerMetadata.Group) {
        g.betas = [h.mom, h.sqrMom]
        g.eps = h.eps
        g.decoupledWeightDecay = decoupled
    }

    override func decode(_ g: OptimizerMetadata.Group, index: Int, into h: inout Hyper) throws {
        let betas = try g.required(\.betas, "betas", group: index)
        guard betas.count == 2 else {
            throw OptimizerStateError.invalidHyperParameter(
                group: index, name: "betas",
                reason: "\(betas.count) values, not 2")
        }
        let saved = try g.required(\.decoupledWeightDecay, "decoupled_weight_decay", group: index)
        guard saved == decoupled else {
            throw OptimizerStateError.invalidHyperParameter(
                group: index, name: "decoupled_weight_decay",
                reason: "saved \(saved), this optimizer's is \(decoupled)")
        }
        (h.mom, h.sqrMom) = (betas[0], betas[1])
        h.eps = try g.required(\.eps, "eps", group: index)
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's `AdamW`.
public final class AdamW: Adam {
    public init(_ groups: [ParamGroup]) { super.init(groups, decoupledWeightDecay: true) }

    public convenience init(
        _ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
        eps: Double = 1e-8, weightDecay: Double = 0.01
    ) {
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

    public init(
        _ params: [Parameter], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
        factor: Double = 4
    ) {
        self.factor = factor
        super.init([ParamGroup(params, Hyper(lr: lr, mom: betas.0, sqrMom: betas.1, eps: eps))])
    }

    public override func didStep() {
        var total = 0.0, n = 0
        for group in paramGroups {
            for p in group.params {
                guard let st = state(for: p), let v = st.expAvgSq else { continue }
                // bias-corrected, as Adam's step uses it
                total += v.sum().item() / (1 - Glibc.pow(group.hyper.sqrMom, Double(st.step)))
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

    override var extraState: [String: Double] {
        var e = ["last_average": lastAverage]
        e["mark"] = mark
        return e
    }

    override func restoreExtra(_ extra: [String: Double]) {
        mark = extra["mark"]
        lastAverage = extra["last_average"] ?? 0
    }
}
