import SwiftAICore

// Quantization-aware training (issue #12): the float model trains while simulating the int8 model — weights rounded
// per channel as the int8 kernels will hold them, and each activation the int8 model stores rounded to its 8 (or 7)
// bits over a moving-average range — with straight-through gradients; then it converts with those ranges.
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

    init(_ model: Module, qmax: Int32) {
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
        for m in model.modules() {
            (m as? Conv2d)?.fakeQuantizeWeight = true
            (m as? Linear)?.fakeQuantizeWeight = true
        }
    }

    private func watchOutput(of id: ObjectIdentifier, _ byID: [ObjectIdentifier: Module]) {
        guard outputs[id] == nil, let m = byID[id] else { return }
        let range = MovingRange(), qmax = qmax
        outputs[id] = range
        handles.append(m.registerOutputHook { m, _, y in
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
    /// hooks removed, weights no longer rounded). Throws if an activation was never seen in training mode.
    public func convert() throws -> QuantizedModel {
        let wasTraining = model.training
        model.eval()
        defer { model.train(wasTraining) }
        let q = try quantize(model, scheme: .static, values: QATValues(qat: self))
        handles.forEach { $0.remove() }
        for m in model.modules() {
            (m as? Conv2d)?.fakeQuantizeWeight = false
            (m as? Linear)?.fakeQuantizeWeight = false
        }
        return q
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
            throw QuantizationError.invalid("quantization-aware training saw no '\(key)' activation in training mode; train at least one batch after prepareQAT, or quantize with calibration")
        }
        return p
    }
}

extension Module {
    /// Prepares this model for quantization-aware training: per-channel int8 weight rounding in every Conv2d and
    /// Linear, and fake quantization (straight-through gradients) of the activations the int8 model stores.
    public func prepareQAT(qmax: Int32 = Quantization.activationQMax) -> QuantizationAwareTraining {
        QuantizationAwareTraining(self, qmax: qmax)
    }
}
