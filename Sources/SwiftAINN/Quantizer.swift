import SwiftAICore

// Post-training int8 quantization (issue #12), as PyTorch's FX graph mode does it with the x86 backend: the model
// is fused for inference (BatchNorm folded, activations and residual adds inside the convolution), observers record
// activation ranges over calibration batches, and every fused convolution becomes a u8·s8 kernel with per-channel
// weights. The same conversion rebuilds a quantized model from an export bundle's tensors, so a file goes through the
// checks a calibrated model does.

/// How activation ranges are chosen from calibration data.
public enum ActivationObserver: String, Sendable, CaseIterable {
    /// The observed minimum and maximum (PyTorch's `MinMaxObserver`).
    case minMax = "minmax"
    /// A 2048-bin histogram over the observed range, clipped where the expected quantization error is least
    /// (PyTorch's `HistogramObserver`, the x86 default: outliers no longer stretch the scale).
    case histogram
}

/// Which layers run in int8.
public enum QuantizationScheme: String, Sendable, CaseIterable {
    /// Convolutions and linear layers, activations quantized with calibrated ranges.
    case `static`
    /// Linear layers only, their inputs quantized per batch at run time (PyTorch's `quantize_dynamic`).
    case dynamic
}

/// What a quantization did: the layers now running in int8, and those left in float32 with the reason.
public struct QuantizationReport: Sendable, CustomStringConvertible {
    public var quantized: [String] = []
    public var float: [(name: String, reason: String)] = []

    public var description: String {
        var s = "\(quantized.count) layers in int8"
        if !float.isEmpty { s += "; float32: " + float.map { "\($0.name) (\($0.reason))" }.joined(separator: ", ") }
        return s
    }
}

/// A quantized model's description or values were not usable.
public enum QuantizationError: Error, CustomStringConvertible, Equatable {
    case invalid(String)

    public var description: String {
        switch self {
        case let .invalid(why): return why
        }
    }
}

/// A model converted to int8: a graph of ``Quantize``, ``QuantizedConv2d``, ``QuantizedResidual``, ``QuantizedLinear``
/// and the float layers without an int8 kernel. Inference only (no parameters).
public final class QuantizedModel: Module {
    public let body: Module
    public let scheme: QuantizationScheme
    /// Largest activation code of the static scheme (127: 7 bits for CPUs without VNNI).
    public let qmax: Int32
    public let report: QuantizationReport
    /// The float32 tensors still used (those of layers left in float32), under the float model's names.
    public let floatState: [String: Tensor]

    init(
        body: Module, scheme: QuantizationScheme, qmax: Int32, report: QuantizationReport, floatState: [String: Tensor]
    ) {
        self.body = body
        self.scheme = scheme
        self.qmax = qmax
        self.report = report
        self.floatState = floatState
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { body(x) }

    /// Everything the model needs, under PyTorch-like quantized names: `<conv>.weight` (int8), `<conv>.weight_scale`,
    /// `<conv>.bias`, `<conv>.scale`/`<conv>.zero_point` (its output), `<conv>.input.scale`/`.zero_point` where float
    /// activations are quantized, and ``floatState``.
    public func quantizedState() -> [String: Tensor] {
        var out = floatState
        func put(_ key: String, _ q: QParams) {
            out[key + ".scale"] = Tensor([q.scale], shape: [1])
            out[key + ".zero_point"] = Tensor([Int64(q.zeroPoint)], shape: [1])
        }
        for m in body.modules() {
            switch m {
            case let q as Quantize: put(q.name, q.params)
            case let c as QuantizedConv2d:
                out[c.name + ".weight"] = c.conv.weight
                out[c.name + ".weight_scale"] = c.conv.weightScales
                out[c.name + ".bias"] = c.conv.bias
                put(c.name, c.conv.output)
            case let l as QuantizedLinear:
                out[l.name + ".weight"] = l.linear.weight
                out[l.name + ".weight_scale"] = l.linear.weightScales
                if let b = l.linear.bias { out[l.name + ".bias"] = b }
                if let q = l.linear.input { put(l.name + ".input", q) }
            default: break
            }
        }
        return out
    }

    /// Rebuilds a quantized `model` (its architecture; its values are not used) from ``quantizedState()``'s tensors,
    /// checking every name, dtype, shape, scale and zero point first; throws ``QuantizationError`` saying what is
    /// wrong.
    /// `qmax` is the largest code the tensors were quantized with; where it exceeds `kernelQMax` (8-bit activations
    /// from a VNNI host loaded where u8·s8 products saturate beyond 7 bits) the int8 layers compute in float32 on
    /// the dequantized values (``Int8Conv/kernelQMax``): the same codes, slower.
    public static func load(
        _ tensors: [String: Tensor], architecture model: Module, scheme: QuantizationScheme,
        qmax: Int32, kernelQMax: Int32 = Quantization.activationQMax
    ) throws -> QuantizedModel {
        require(
            kernelQMax == 127 || kernelQMax == 255,
            "QuantizedModel.load: kernelQMax must be 127 or 255, got \(kernelQMax)")
        model.eval()
        let values = StoredValues(tensors: tensors, qmax: qmax, kernelQMax: kernelQMax)
        let checked = try quantize(model, scheme: scheme, values: values)  // every tensor checked, nothing changed yet
        let needed = Set(checked.quantizedState().keys)
        if let extra = tensors.keys.sorted().first(where: { !needed.contains($0) }) {
            throw QuantizationError.invalid("unexpected tensor '\(extra)' (not used by the quantized model)")
        }
        try model.load(stateDict: checked.floatState, strict: false)
        return try quantize(model, scheme: scheme, values: values)  // float layers fused with their loaded values
    }
}

extension Module {
    /// Static post-training quantization: fuses this model (in evaluation mode), runs `calibration` batches through it
    /// to observe activation ranges (twice for the histogram observer), and returns the int8 model. `calibration`
    /// calls its argument with each batch. Activations use 0…`qmax` (127 without VNNI, PyTorch's `reduce_range`).
    /// Throws ``QuantizationError`` for non-finite weights or an activation no batch reached.
    public func quantizedStatic(
        observer: ActivationObserver = .histogram, qmax: Int32 = Quantization.activationQMax,
        calibration: ((Tensor) -> Void) -> Void
    ) throws -> QuantizedModel {
        let wasTraining = training
        eval()
        defer { train(wasTraining) }
        let fused = fusedForInference()
        let observers = Observers(fused, observer: observer, qmax: qmax)
        noGrad {
            calibration { x in _ = fused(x) }
            if observer == .histogram {
                observers.startHistograms()
                calibration { x in _ = fused(x) }
            }
        }
        observers.remove()
        return try quantize(self, fused: fused, scheme: .static, values: observers)
    }

    /// Dynamic quantization (PyTorch's `quantize_dynamic`): linear layers get int8 weights and quantize their
    /// input per batch; everything else is this model fused for inference, in float32. Throws for non-finite weights.
    public func quantizedDynamic() throws -> QuantizedModel {
        let wasTraining = training
        eval()
        defer { train(wasTraining) }
        return try quantize(
            self, scheme: .dynamic, values: Observers(fusedForInference(), observer: .minMax, qmax: 255))
    }
}

/// Where a conversion takes weights and activation ranges from: a model and its observers, or a file's tensors.
protocol QuantizationValues {
    /// Largest activation code.
    var qmax: Int32 { get }
    /// The largest input code this host's int8 kernels take (``Int8Conv/kernelQMax``).
    var kernelQMax: Int32 { get }
    /// The quantization of `module`'s input or output, stored under `key`.
    func activation(_ key: String, of module: Module, output: Bool) throws -> QParams
    /// int8 weights, their scales and the float bias of a fused convolution.
    func conv(_ name: String, _ fused: FusedConv2d) throws -> (weight: Tensor, scales: Tensor, bias: Tensor)
    func linear(_ name: String, _ linear: Linear) throws -> (weight: Tensor, scales: Tensor, bias: Tensor?)
}

func quantize(_ model: Module, fused: Module? = nil, scheme: QuantizationScheme, values: QuantizationValues) throws
    -> QuantizedModel
{
    var names: [ObjectIdentifier: String] = [:]
    for (n, m) in model.namedModules() { names[ObjectIdentifier(m)] = n }
    var c = Converter(names: names, values: values, scheme: scheme)
    let f = fused ?? model.fusedForInference()
    var (body, state) = try c.convert(f, nil)
    if let state { body = Sequential(body, Dequantize(state)) }
    // Float tensors of the layers still in float32: all but those folded into int8 layers.
    let consumed = c.consumed
    var floatState: [String: Tensor] = [:]
    for (key, t) in model.stateDict() where !consumed.contains(where: { key.hasPrefix($0 + ".") }) {
        floatState[key] = t
    }
    if let stored = values as? StoredValues { floatState = try stored.floats(expected: floatState) }
    return QuantizedModel(body: body, scheme: scheme, qmax: values.qmax, report: c.report, floatState: floatState)
}

/// Turns a fused graph into its int8 counterpart, tracking the quantization of the activation flowing through
/// (nil while it is float32).
struct Converter {
    let names: [ObjectIdentifier: String]
    let values: QuantizationValues
    let scheme: QuantizationScheme
    var report = QuantizationReport()
    /// Names of float layers whose tensors the int8 layers replace (convolutions and their BatchNorms, linear layers).
    var consumed: [String] = []

    func name(_ m: Module) -> String { names[ObjectIdentifier(m)] ?? "\(type(of: m))" }

    func convName(_ f: FusedConv2d) -> String { names[f.sources[0]] ?? "conv" }

    mutating func quantizedConv(_ f: FusedConv2d, input: QParams, output: QParams, residual: QParams? = nil) throws
        -> QuantizedConv2d
    {
        let n = convName(f)
        let v = try values.conv(n, f)
        let c = f.conv
        guard v.weight.shape == c.weight.shape else {
            throw QuantizationError.invalid("'\(n).weight' is \(v.weight.shape), the model needs \(c.weight.shape)")
        }
        consumed += f.sources.compactMap { names[$0] }
        report.quantized.append(n)
        return QuantizedConv2d(
            Int8Conv(
                weight: v.weight, weightScales: v.scales, bias: v.bias, stride: c.stride,
                padding: c.padding, groups: c.groups, input: input, output: output,
                residual: residual, epilogue: c.epilogue, kernelQMax: values.kernelQMax),
            name: n)
    }

    mutating func convert(_ m: Module, _ state: QParams?) throws -> (Module, QParams?) {
        if scheme == .dynamic, !(m is Sequential || m is Linear) { return try floatLayer(m, state) }
        switch m {
        case let f as FusedConv2d:
            let n = convName(f)
            var pre: [Module] = []
            var input = state
            if input == nil {
                let p = try values.activation(n + ".input", of: f, output: false)
                pre.append(Quantize(p, name: n + ".input"))
                input = p
            }
            let out = try values.activation(n, of: f, output: true)
            let q = try quantizedConv(f, input: input!, output: out)
            return (pre.isEmpty ? q : Sequential(pre + [q]), out)
        case let r as FusedResidual:
            var pre: [Module] = []
            var input = state
            let first = (r.main.modules().first { $0 is FusedConv2d } as? FusedConv2d) ?? r.last
            if input == nil {
                let key = convName(first) + ".input"
                let p = try values.activation(key, of: r, output: false)
                pre.append(Quantize(p, name: key))
                input = p
            }
            let (main, afterMain) = try convert(r.main, input)
            var (shortcut, residual) = try convert(r.shortcut, input)
            let lastName = convName(r.last)
            if residual == nil {
                let p = try values.activation(lastName + ".residual", of: r.shortcut, output: true)
                shortcut = Sequential(shortcut, Quantize(p, name: lastName + ".residual"))
                residual = p
            }
            guard let afterMain, let mainSeq = main as? Sequential else { return try floatLayer(r, state) }
            let out = try values.activation(lastName, of: r, output: true)
            let last = try quantizedConv(r.last, input: afterMain, output: out, residual: residual)
            let q = QuantizedResidual(main: mainSeq, last: last, shortcut: shortcut)
            return (pre.isEmpty ? q : Sequential(pre + [q]), out)
        case let s as Sequential:
            var layers: [Module] = []
            var st = state
            for l in s.layers {
                let (c, next) = try convert(l, st)
                layers.append(c)
                st = next
            }
            return (Sequential(layers), st)
        case let p as MaxPool2d where state != nil: return (QuantizedPool2d(p), state)
        case let p as AvgPool2d where state != nil: return (QuantizedPool2d(p, zeroPoint: state!.zeroPoint), state)
        case is Identity: return (m, state)
        case let l as Linear:
            let n = name(l)
            let v = try values.linear(n, l)
            guard v.weight.shape == l.weight.shape else {
                throw QuantizationError.invalid("'\(n).weight' is \(v.weight.shape), the model needs \(l.weight.shape)")
            }
            let input = scheme == .static ? try values.activation(n + ".input", of: l, output: false) : nil
            consumed.append(n)
            report.quantized.append(n)
            let q = QuantizedLinear(
                Int8Linear(
                    weight: v.weight, weightScales: v.scales, bias: v.bias, input: input,
                    kernelQMax: values.kernelQMax), name: n)
            return (state.map { Sequential(Dequantize($0), q) } ?? q, nil)
        default:
            return try floatLayer(m, state)
        }
    }

    /// `m` left in float32 (after dequantizing its input); its weighted layers are reported.
    mutating func floatLayer(_ m: Module, _ state: QParams?) throws -> (Module, QParams?) {
        let reason = scheme == .dynamic ? "dynamic quantization covers linear layers" : "no int8 kernel"
        for sub in m.modules() {
            if let f = sub as? FusedConv2d {
                report.float.append((convName(f), reason))
            } else if sub is Conv2d || sub is Linear || sub is BatchNorm {
                report.float.append((name(sub), reason))
            }
        }
        return (state.map { Sequential(Dequantize($0), m) } ?? m, nil)
    }
}
