import SwiftAICore

// Quantization-aware training (issue #12): the float model trains while simulating the int8 model — weights rounded
// per channel as the int8 kernels will hold them, and each activation the int8 model stores rounded to its 8 (or 7)
// bits over a moving-average range — with straight-through gradients; then it converts with those ranges. The
// weights are rounded by swapping every Conv2d and Linear, wherever it sits, for a fake-quantized module sharing its
// parameters (``Module/replaceModules(_:)``, PyTorch's eager-mode `prepare_qat`); the conversion swaps them back.
// Per-channel symmetric rounding commutes with folding BatchNorm (a positive or negative factor per output channel),
// so rounding the unfolded weights simulates the folded int8 weights exactly.

/// A moving-average min-max range (PyTorch's `MovingAverageMinMaxObserver`, averaging constant 0.01).
final class MovingRange {
    var lo: Float = .infinity, hi: Float = -.infinity
    var seen = false

    func update(_ t: Tensor) {
        let x = t.detached()
        let (a, b) = (Float(x.min().item()), Float(x.max().item()))
        guard a.isFinite, b.isFinite else { return }
        if seen { (lo, hi) = (lo + 0.01 * (a - lo), hi + 0.01 * (b - hi)) } else { (lo, hi, seen) = (a, b, true) }
    }

    func params(_ qmax: Int32) -> QParams? { seen ? QParams(min: lo, max: hi, qmax: qmax) : nil }
}

/// A model prepared for quantization-aware training (``Module/prepareQAT(qmax:)``): train it as usual, then
/// ``convert()`` it to the int8 model. Ranges move only in training mode.
public final class QuantizationAwareTraining {
    public let model: Module
    public let qmax: Int32
    private var outputs: [ObjectIdentifier: MovingRange] = [:]
    private var inputs: [ObjectIdentifier: MovingRange] = [:]
    private var handles: [HookHandle] = []
    /// The float layers and the fake-quantized modules standing in for them until ``convert()``.
    private var swaps: [(float: Module, qat: Module)] = []

    init(_ model: Module, qmax: Int32) {
        require(
            !model.modules().contains { $0 is QATConv2d || $0 is QATLinear },
            "prepareQAT: the model is already prepared for quantization-aware training")
        self.model = model
        self.qmax = qmax
        let fused = model.fusedForInference()
        var byID: [ObjectIdentifier: Module] = [:]
        for m in model.modules() { byID[ObjectIdentifier(m)] = m }
        var firstInput: ObjectIdentifier? = nil
        for m in fused.modules() {
            switch m {
            case let f as FusedConv2d where !f.conv.addsResidual:
                watchOutput(of: f.sources.last!, byID)
                if firstInput == nil { firstInput = f.sources[0] }
            case let r as FusedResidual:
                watchOutput(of: r.source, byID)
                if firstInput == nil { firstInput = r.source }
            case let l as Linear:
                watchInput(of: l)
            default: break
            }
        }
        if let id = firstInput, let m = byID[id] { watchInput(of: m) }
        swaps = model.replaceModules { m in
            switch m {
            case let c as Conv2d: return QATConv2d(c)
            case let l as Linear: return QATLinear(l)
            default: return nil
            }
        }.map { ($0, $1) }
    }

    /// Puts the fake-quantized modules in place of the float layers (`true`) or the float layers back.
    private func swap(toQAT: Bool) {
        let by = Dictionary(
            uniqueKeysWithValues: swaps.map {
                toQAT
                    ? (ObjectIdentifier($0.float), $0.qat)
                    : (ObjectIdentifier($0.qat), $0.float)
            })
        model.replaceModules { by[ObjectIdentifier($0)] }
    }

    private func watchOutput(of id: ObjectIdentifier, _ byID: [ObjectIdentifier: Module]) {
        guard outputs[id] == nil, let m = byID[id] else { return }
        let range = MovingRange(), qmax = qmax
        outputs[id] = range
        handles.append(
            m.registerOutputHook { m, _, y in
                if m.training { range.update(y) }
                return range.params(qmax).map { y.fakeQuantized($0) } ?? y
            })
    }

    private func watchInput(of m: Module) {
        guard inputs[ObjectIdentifier(m)] == nil else { return }
        let range = MovingRange()
        inputs[ObjectIdentifier(m)] = range
        handles.append(m.registerForwardHook { m, x, _ in if m.training { range.update(x) } })
    }

    /// The int8 model with the ranges learned in training (the model itself goes back to plain float32 training:
    /// hooks removed, its own Conv2d and Linear layers back). Throws if an activation was never seen in training
    /// mode, leaving the model prepared.
    public func convert() throws -> QuantizedModel {
        let wasTraining = model.training
        model.eval()
        defer { model.train(wasTraining) }
        swap(toQAT: false)
        do {
            let q = try quantize(model, scheme: .static, values: QATValues(qat: self))
            handles.forEach { $0.remove() }
            swaps = []
            return q
        } catch {
            swap(toQAT: true)
            throw error
        }
    }

    fileprivate func range(_ id: ObjectIdentifier, output: Bool) -> MovingRange? { output ? outputs[id] : inputs[id] }
}

/// The ranges a quantization-aware training learned, for the conversion.
private struct QATValues: QuantizationValues {
    let qat: QuantizationAwareTraining
    var qmax: Int32 { qat.qmax }

    func activation(_ key: String, of module: Module, output: Bool) throws -> QParams {
        let id: ObjectIdentifier
        switch module {
        case let f as FusedConv2d: id = output ? f.sources.last! : f.sources[0]
        case let r as FusedResidual: id = r.source
        default: id = ObjectIdentifier(module)
        }
        guard let p = qat.range(id, output: output)?.params(qmax) else {
            throw QuantizationError.invalid(
                """
                quantization-aware training saw no '\(key)' activation in training mode; train at least one batch \
                after prepareQAT, or quantize with calibration
                """
            )
        }
        return p
    }
}

/// Quantization-aware training's stand-in for a ``Conv2d`` (``Module/prepareQAT(qmax:)``; PyTorch's
/// `torch.ao.nn.qat.Conv2d`): the same ``Parameter``s under the same names, convolving with the weight rounded per
/// output channel as the int8 kernels will hold it; gradients pass the rounding straight through.
public final class QATConv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int

    /// Shares `conv`'s parameters.
    public init(_ conv: Conv2d) {
        weight = conv.weight
        bias = conv.bias
        (stride, padding, groups) = (conv.stride, conv.padding, conv.groups)
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor {
        x.conv2d(
            weight: weight.value.fakeQuantizedPerChannel(), bias: bias?.value, stride: stride, padding: padding,
            groups: groups)
    }
}

/// Quantization-aware training's stand-in for a ``Linear`` (PyTorch's `torch.ao.nn.qat.Linear`): the same
/// ``Parameter``s, the weight rounded per output feature as the int8 kernels will hold it (straight-through).
public final class QATLinear: Module {
    public let weight: Parameter
    public let bias: Parameter?

    /// Shares `linear`'s parameters.
    public init(_ linear: Linear) {
        weight = linear.weight
        bias = linear.bias
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor {
        x.linear(weight: weight.value.fakeQuantizedPerChannel(), bias: bias?.value)
    }
}

extension Module {
    /// Prepares this model for quantization-aware training: every Conv2d and Linear in the tree (inside user-written
    /// modules too) is swapped for a ``QATConv2d``/``QATLinear`` sharing its parameters, whose weights are rounded
    /// per channel to int8, and the activations the int8 model stores are fake-quantized (straight-through
    /// gradients). Optimizers, parameter names and saved weights are unchanged.
    public func prepareQAT(qmax: Int32 = Quantization.activationQMax) -> QuantizationAwareTraining {
        QuantizationAwareTraining(self, qmax: qmax)
    }
}
