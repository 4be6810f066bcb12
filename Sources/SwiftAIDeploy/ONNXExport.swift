import Foundation
import SwiftAICore
import SwiftAINN

/// Why ``exportONNX(_:inputShape:to:producerVersion:)`` could not export a model.
public enum ONNXExportError: Error, CustomStringConvertible {
    /// `inputShape` is not `[C, H, W]` with positive sizes.
    case invalidInputShape([Int])
    /// A module with no ONNX translation (a `Lambda`, a custom `Module` subclass, a module from
    /// `fusedForInference()`, …), at its dotted path in the model (`""`: the model itself).
    case unsupportedModule(path: String, type: String)
    /// A known module whose configuration, or whose input's shape, the export cannot express.
    case unsupportedConfiguration(path: String, type: String, reason: String)
    /// Encoding or writing the file failed.
    case cannotWrite(path: String, reason: String)

    public var description: String {
        func module(_ path: String, _ type: String) -> String {
            "module \(path.isEmpty ? "<model>" : "'\(path)'") (\(type))"
        }
        switch self {
        case .invalidInputShape(let shape):
            return "ONNX export: inputShape must be [C, H, W] with positive sizes (got \(shape))"
        case .unsupportedModule(let path, let type):
            return "ONNX export: \(module(path, type)) has no ONNX translation"
        case .unsupportedConfiguration(let path, let type, let reason):
            return "ONNX export: \(module(path, type)): \(reason)"
        case .cannotWrite(let path, let reason):
            return "ONNX export: cannot write \(path): \(reason)"
        }
    }
}

/// Writes `model` as an ONNX file (opset 17, IR version 8, producer "SwiftAI") computing what the model computes in
/// evaluation mode, whatever its current mode: BatchNorm uses its running statistics, Dropout is left out.
///
/// The graph's input `input` is float32 `[batch, C, H, W]` with `inputShape = [C, H, W]` and a dynamic `batch`; its
/// output `logits` is float32 `[batch, …]` (`[batch, nOut]` for a classifier). Weights are float32 initializers
/// (Float64 parameters are converted) named by their state-dict keys, e.g. `0.4.0.conv1.weight`.
///
/// Exports `Sequential`, `Conv2d`, `BatchNorm1d`/`BatchNorm2d`, `Linear`, `ReLU`, `LeakyReLU`, `GeneralRelu`,
/// `Sigmoid`, `SigmoidRange`, `Tanh`, `MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`/`AdaptiveMaxPool2d` (output 1, or
/// one dividing the input), `AdaptiveConcatPool2d`, `GlobalAvgPool`, `Flatten`, `Dropout`, `Dropout2d`, `Identity`,
/// `ResBlock` and torchvision's `ResNet`, `BasicBlock` and `Bottleneck`; any other module throws
/// ``ONNXExportError/unsupportedModule(path:type:)``. The file is written atomically (a temporary file in the same
/// folder, then a rename), and not at all when the export fails.
public func exportONNX(
    _ model: Module, inputShape: [Int], to path: String,
    producerVersion: String = SwiftAIVersion.string
) throws {
    guard inputShape.count == 3, inputShape.allSatisfy({ $0 > 0 }) else {
        throw ONNXExportError.invalidInputShape(inputShape)
    }
    let builder = ONNXGraphBuilder(model)
    let output = try builder.emit(model, ONNXValue(name: "input", shape: inputShape))
    let proto = builder.modelProto(inputShape: inputShape, output: output, producerVersion: producerVersion)
    let url = URL(fileURLWithPath: path)
    let tmp = url.deletingLastPathComponent().appendingPathComponent(
        ".\(url.lastPathComponent).tmp-\(getpid())-\(UUID().uuidString)")
    do {
        let data: Data = try proto.serializedBytes()
        try data.write(to: tmp)
        guard rename(tmp.path, url.path) == 0 else {
            throw ONNXExportError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
        }
    } catch {
        try? FileManager.default.removeItem(at: tmp)
        throw error as? ONNXExportError ?? ONNXExportError.cannotWrite(path: path, reason: error.localizedDescription)
    }
}

/// A tensor in the graph: its name and its shape without the batch dimension.
private struct ONNXValue {
    let name: String
    let shape: [Int]
}

/// Translates a module tree into ONNX nodes and initializers, tracking every value's per-sample shape (only the batch
/// dimension is dynamic, so pooling windows and reshapes are resolved at export time).
private final class ONNXGraphBuilder {
    private var nodes: [Onnx_NodeProto] = []
    private var initializers: [Onnx_TensorProto] = []
    /// Names of nodes, values and initializers handed out so far (node outputs are named after their node).
    private var usedNames: Set<String> = ["input", "logits"]
    /// Initializer name per parameter or buffer object (a shared parameter is stored once).
    private var initializerNames: [ObjectIdentifier: String] = [:]
    /// Dotted path of every module of the model, as in `namedModules()`.
    private let paths: [ObjectIdentifier: String]
    /// State-dict key of every parameter and buffer.
    private let stateNames: [ObjectIdentifier: String]

    init(_ model: Module) {
        paths = Dictionary(
            model.namedModules().map { (ObjectIdentifier($0.1), $0.0) }, uniquingKeysWith: { first, _ in first })
        let tensors =
            model.namedParameters().map { (ObjectIdentifier($0.1), $0.0) }
            + model.namedBuffers().map { (ObjectIdentifier($0.1), $0.0) }
        stateNames = Dictionary(tensors, uniquingKeysWith: { first, _ in first })
    }

    // MARK: Modules

    /// Appends the nodes computing `m(x)` in evaluation mode and returns its output.
    func emit(_ m: Module, _ x: ONNXValue) throws -> ONNXValue {
        let at = path(m)
        switch m {
        case let s as Sequential: return try s.layers.reduce(x) { try emit($1, $0) }
        case is Identity, is Dropout, is Dropout2d: return x
        case let c as Conv2d: return try conv(c, x)
        case let bn as BatchNorm: return try batchNorm(bn, x)
        case let l as Linear: return try linear(l, x)
        case is ReLU: return node("Relu", [x], at: at, shape: x.shape)
        case let a as LeakyReLU:
            return node("LeakyRelu", [x], at: at, [attribute("alpha", float: a.negativeSlope)], shape: x.shape)
        case is Sigmoid: return node("Sigmoid", [x], at: at, shape: x.shape)
        case is Tanh: return node("Tanh", [x], at: at, shape: x.shape)
        case let g as GeneralRelu:
            var y =
                g.leak == 0
                ? node("Relu", [x], at: at, shape: x.shape)
                : node("LeakyRelu", [x], at: at, [attribute("alpha", float: g.leak)], shape: x.shape)
            if g.sub != 0 { y = node("Sub", [y.name, scalar(g.sub, at + "/sub")], at: at, shape: x.shape) }
            if let maxv = g.maxv { y = node("Min", [y.name, scalar(maxv, at + "/maxv")], at: at, shape: x.shape) }
            return y
        case let r as SigmoidRange:
            let y = node("Sigmoid", [x], at: at, shape: x.shape)
            let scaled = node("Mul", [y.name, scalar(r.high - r.low, at + "/range")], at: at, shape: x.shape)
            return node("Add", [scaled.name, scalar(r.low, at + "/low")], at: at, shape: x.shape)
        case let p as MaxPool2d:
            return try pool(
                p, x, average: false, kernel: p.kernelSize, stride: p.stride ?? p.kernelSize, padding: p.padding,
                ceilMode: p.ceilMode)
        case let p as AvgPool2d:
            return try pool(
                p, x, average: true, kernel: p.kernelSize, stride: p.stride ?? p.kernelSize, padding: p.padding,
                ceilMode: p.ceilMode)
        case let p as AdaptiveAvgPool2d: return try adaptivePool(p, x, average: true, size: p.outputSize)
        case let p as AdaptiveMaxPool2d: return try adaptivePool(p, x, average: false, size: p.outputSize)
        case let p as AdaptiveConcatPool2d:
            let (mx, avg) = (try emit(p.mp, x), try emit(p.ap, x))
            return node(
                "Concat", [mx, avg], at: at, [attribute("axis", int: 1)],
                shape: [mx.shape[0] + avg.shape[0]] + mx.shape.dropFirst())
        case is GlobalAvgPool:
            guard x.shape.count == 3 else { throw unsupported(m, "expects [C, H, W] per sample, got \(x.shape)") }
            return node(
                "ReduceMean", [x], at: at, [attribute("axes", ints: [2, 3]), attribute("keepdims", int: 0)],
                shape: [x.shape[0]])
        case let f as Flatten: return try flatten(f, x)
        case let r as ResBlock:
            let main = try emit(r.convs, x)
            return try emit(r.act, add(main, try emit(r.idconv, try emit(r.pool, x)), at: r))
        case let b as BasicBlock:
            let out = try [b.conv1, b.bn1, b.relu, b.conv2, b.bn2].reduce(x) { try emit($1, $0) }
            return try emit(b.relu, add(out, try b.downsample.map { try emit($0, x) } ?? x, at: b))
        case let b as Bottleneck:
            let out = try [b.conv1, b.bn1, b.relu, b.conv2, b.bn2, b.relu, b.conv3, b.bn3].reduce(x) {
                try emit($1, $0)
            }
            return try emit(b.relu, add(out, try b.downsample.map { try emit($0, x) } ?? x, at: b))
        case let r as ResNet:
            let features = try [r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4, r.avgpool]
                .reduce(x) { try emit($1, $0) }
            let flat = node(
                "Flatten", [features], at: at, [attribute("axis", int: 1)], shape: [features.shape.reduce(1, *)])
            return try emit(r.fc, flat)
        default:
            throw ONNXExportError.unsupportedModule(path: at, type: String(describing: type(of: m)))
        }
    }

    private func conv(_ c: Conv2d, _ x: ONNXValue) throws -> ONNXValue {
        let w = c.weight.shape, (s, p) = (c.stride, c.padding)
        guard x.shape.count == 3, x.shape[0] == w[1] * c.groups else {
            throw unsupported(c, "expects [\(w[1] * c.groups), H, W] per sample, got \(x.shape)")
        }
        guard x.shape[1] + 2 * p >= w[2], x.shape[2] + 2 * p >= w[3] else {
            throw unsupported(c, "input \(x.shape) is smaller than the kernel \(w[2])×\(w[3])")
        }
        let at = path(c)
        var inputs = [x.name, initializer(c.weight, c.weight.value)]
        if let b = c.bias { inputs.append(initializer(b, b.value)) }
        let attributes = [
            attribute("kernel_shape", ints: [w[2], w[3]]), attribute("strides", ints: [s, s]),
            attribute("pads", ints: [p, p, p, p]), attribute("dilations", ints: [1, 1]),
            attribute("group", int: c.groups)
        ]
        let shape = [w[0], (x.shape[1] + 2 * p - w[2]) / s + 1, (x.shape[2] + 2 * p - w[3]) / s + 1]
        return node("Conv", inputs, at: at, attributes, shape: shape)
    }

    private func batchNorm(_ bn: BatchNorm, _ x: ONNXValue) throws -> ONNXValue {
        guard let mean = bn.runningMean, let variance = bn.runningVar else {
            throw unsupported(
                bn, "without running statistics (trackRunningStats: false) it normalises with batch statistics")
        }
        let n = mean.value.count, at = path(bn)
        let ranks = bn is BatchNorm2d ? [3] : [1, 2]
        guard ranks.contains(x.shape.count), x.shape[0] == n else {
            let dims = ranks.map { "\($0 + 1)" }.joined(separator: " or ")
            throw unsupported(bn, "expects \(n) channels and \(dims)-D input, got [batch] + \(x.shape)")
        }
        let scale =
            bn.weight.map { initializer($0, $0.value) }
            ?? constant(Array(repeating: 1, count: n), shape: [n], at + "/scale")
        let bias =
            bn.bias.map { initializer($0, $0.value) }
            ?? constant(Array(repeating: 0, count: n), shape: [n], at + "/bias")
        let inputs = [x.name, scale, bias, initializer(mean, mean.value), initializer(variance, variance.value)]
        return node("BatchNormalization", inputs, at: at, [attribute("epsilon", float: bn.eps)], shape: x.shape)
    }

    /// `Gemm` with `transB = 1`, as `torch.onnx` exports `nn.Linear` on 2-D inputs.
    private func linear(_ l: Linear, _ x: ONNXValue) throws -> ONNXValue {
        let w = l.weight.shape, at = path(l)
        guard x.shape == [w[1]] else {
            throw unsupported(l, "expects [batch, \(w[1])] input, got [batch] + \(x.shape)")
        }
        var inputs = [x.name, initializer(l.weight, l.weight.value)]
        if let b = l.bias { inputs.append(initializer(b, b.value)) }
        return node("Gemm", inputs, at: at, [attribute("transB", int: 1)], shape: [w[0]])
    }

    /// PyTorch's max or average pooling (padding counted in the average, as `nn.AvgPool2d` does) as an ONNX pool
    /// without `ceil_mode`. PyTorch's windows are resolved here: end padding makes its last window fit, so the output
    /// size is PyTorch's. Where a window hangs over the padded input (`ceilMode`), PyTorch divides its average by the
    /// part inside; ONNX runtimes disagree on that divisor with `ceil_mode` or asymmetric pads, so the input is
    /// zero-padded explicitly (`Pad`), averaged over whole windows, and rescaled by a constant `k²/divisor` map.
    private func pool(
        _ m: Module, _ x: ONNXValue, average: Bool, kernel k: Int, stride s: Int, padding p: Int,
        ceilMode: Bool
    ) throws -> ONNXValue {
        guard x.shape.count == 3 else { throw unsupported(m, "expects [C, H, W] per sample, got \(x.shape)") }
        guard k > 0, s > 0, p >= 0, p <= k / 2 else {
            throw unsupported(m, "padding \(p) must be at most half of the kernel \(k) (stride \(s))")
        }
        guard x.shape[1] + 2 * p >= k, x.shape[2] + 2 * p >= k else {
            throw unsupported(m, "input \(x.shape) is smaller than the kernel \(k)")
        }
        let at = path(m), h = PoolWindows(x.shape[1], k, s, p, ceilMode), w = PoolWindows(x.shape[2], k, s, p, ceilMode)
        let shape = [x.shape[0], h.count, w.count]
        let window = [attribute("kernel_shape", ints: [k, k]), attribute("strides", ints: [s, s])]
        guard average else {
            return node(
                "MaxPool", [x], at: at, window + [attribute("pads", ints: [p, p, h.endPad, w.endPad])], shape: shape)
        }
        let divisors = h.divisors.flatMap { dh in w.divisors.map { dw in dh * dw } }
        guard divisors.contains(where: { $0 != k * k }) else {
            return node(
                "AveragePool", [x], at: at,
                window + [
                    attribute("pads", ints: [p, p, p, p]),
                    attribute("count_include_pad", int: 1)
                ], shape: shape)
        }
        let pads = constant(int64: [0, 0, p, p, 0, 0, h.endPad, w.endPad], at + "/pads")
        let padded = node(
            "Pad", [x.name, pads], at: at, shape: [x.shape[0], x.shape[1] + p + h.endPad, x.shape[2] + p + w.endPad])
        let pooled = node("AveragePool", [padded], at: at, window, shape: shape)
        let rescale = constant(
            divisors.map { Float(k * k) / Float($0) }, shape: [h.count, w.count], at + "/divisor_correction")
        return node("Mul", [pooled.name, rescale], at: at, shape: shape)
    }

    /// Global pooling for output size 1, otherwise a fixed pool when the output size divides the input's (then
    /// PyTorch's adaptive windows are exactly those); ONNX has no adaptive pooling for the other cases.
    private func adaptivePool(_ m: Module, _ x: ONNXValue, average: Bool, size: (Int, Int)) throws -> ONNXValue {
        guard x.shape.count == 3 else { throw unsupported(m, "expects [C, H, W] per sample, got \(x.shape)") }
        let at = path(m), shape = [x.shape[0], size.0, size.1]
        if size == (1, 1) { return node(average ? "GlobalAveragePool" : "GlobalMaxPool", [x], at: at, shape: shape) }
        guard size.0 > 0, size.1 > 0, x.shape[1] % size.0 == 0, x.shape[2] % size.1 == 0 else {
            throw unsupported(m, "output size \(size) must be 1 or divide the input's \(x.shape[1])×\(x.shape[2])")
        }
        let kernel = [x.shape[1] / size.0, x.shape[2] / size.1]
        return node(
            average ? "AveragePool" : "MaxPool", [x], at: at,
            [attribute("kernel_shape", ints: kernel), attribute("strides", ints: kernel)], shape: shape)
    }

    /// ONNX `Flatten` for `startDim: 1` through the last dimension, otherwise `Reshape` keeping the batch dimension.
    private func flatten(_ f: Flatten, _ x: ONNXValue) throws -> ONNXValue {
        let rank = x.shape.count + 1, at = path(f)
        let start = f.startDim < 0 ? f.startDim + rank : f.startDim, end = f.endDim < 0 ? f.endDim + rank : f.endDim
        guard 0 <= start, start <= end, end < rank else {
            throw unsupported(f, "dimensions \(f.startDim)...\(f.endDim) out of range for input [batch] + \(x.shape)")
        }
        if start == end { return x }
        guard start >= 1 else { throw unsupported(f, "flattening the dynamic batch dimension is not supported") }
        let shape = Array(x.shape[..<(start - 1)]) + [x.shape[(start - 1)..<end].reduce(1, *)] + x.shape[end...]
        if start == 1 && end == rank - 1 {
            return node("Flatten", [x], at: at, [attribute("axis", int: 1)], shape: shape)
        }
        return node("Reshape", [x.name, constant(int64: [0] + shape, at + "/shape")], at: at, shape: shape)
    }

    /// The residual sum of a block.
    private func add(_ a: ONNXValue, _ b: ONNXValue, at block: Module) throws -> ONNXValue {
        guard a.shape == b.shape else {
            throw unsupported(block, "residual branch \(a.shape) and shortcut \(b.shape) differ")
        }
        return node("Add", [a, b], at: path(block), shape: a.shape)
    }

    private func path(_ m: Module) -> String { paths[ObjectIdentifier(m)] ?? "" }

    private func unsupported(_ m: Module, _ reason: String) -> ONNXExportError {
        .unsupportedConfiguration(path: path(m), type: String(describing: type(of: m)), reason: reason)
    }

    // MARK: Graph

    private func node(
        _ op: String, _ inputs: [ONNXValue], at path: String, _ attributes: [Onnx_AttributeProto] = [],
        shape: [Int]
    ) -> ONNXValue {
        node(op, inputs.map(\.name), at: path, attributes, shape: shape)
    }

    /// Appends a node named `<module path>/<op>`, whose single output has the node's name.
    private func node(
        _ op: String, _ inputs: [String], at path: String, _ attributes: [Onnx_AttributeProto] = [],
        shape: [Int]
    ) -> ONNXValue {
        var n = Onnx_NodeProto()
        n.opType = op
        n.name = uniqueName(path.isEmpty ? op : path + "/" + op)
        n.input = inputs
        n.output = [n.name]
        n.attribute = attributes
        nodes.append(n)
        return ONNXValue(name: n.name, shape: shape)
    }

    private func uniqueName(_ base: String) -> String {
        var name = base, i = 0
        while !usedNames.insert(name).inserted {
            i += 1
            name = "\(base)_\(i)"
        }
        return name
    }

    /// The float32 initializer of a parameter or buffer, named by its state-dict key, added once.
    private func initializer(_ object: AnyObject, _ value: Tensor) -> String {
        let id = ObjectIdentifier(object)
        if let name = initializerNames[id] { return name }
        let name = constant(value.floats, shape: value.shape, stateNames[id] ?? "initializer")
        initializerNames[id] = name
        return name
    }

    private func constant(_ values: [Float], shape: [Int], _ name: String) -> String {
        tensor(name, .float, shape, values.map { $0.bitPattern.littleEndian })
    }

    private func constant(int64 values: [Int], _ name: String) -> String {
        tensor(name, .int64, [values.count], values.map { Int64($0).littleEndian })
    }

    private func scalar(_ value: Double, _ name: String) -> String { constant([Float(value)], shape: [], name) }

    /// Adds an initializer holding `littleEndian` as `raw_data`.
    private func tensor<T>(_ name: String, _ type: Onnx_TensorProto.DataType, _ shape: [Int], _ littleEndian: [T])
        -> String
    {
        var t = Onnx_TensorProto()
        t.name = uniqueName(name)
        t.dataType = Int32(type.rawValue)
        t.dims = shape.map(Int64.init)
        t.rawData = littleEndian.withUnsafeBytes { Data($0) }
        initializers.append(t)
        return t.name
    }

    /// The model around the nodes so far; `output` becomes the graph output `logits`.
    func modelProto(inputShape: [Int], output: ONNXValue, producerVersion: String) -> Onnx_ModelProto {
        if let last = nodes.indices.last, nodes[last].output == [output.name] {
            nodes[last].output = ["logits"]
        } else {
            _ = node("Identity", [output.name], at: "", shape: output.shape)
            nodes[nodes.count - 1].output = ["logits"]
        }
        var graph = Onnx_GraphProto()
        graph.name = "SwiftAI"
        graph.node = nodes
        graph.initializer = initializers
        graph.input = [valueInfo("input", inputShape)]
        graph.output = [valueInfo("logits", output.shape)]
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = 17
        var model = Onnx_ModelProto()
        model.irVersion = 8
        model.producerName = "SwiftAI"
        model.producerVersion = producerVersion
        model.opsetImport = [opset]
        model.graph = graph
        return model
    }

    /// A float32 tensor `[batch] + shape` with the symbolic batch dimension `batch`.
    private func valueInfo(_ name: String, _ shape: [Int]) -> Onnx_ValueInfoProto {
        var batch = Onnx_TensorShapeProto.Dimension()
        batch.dimParam = "batch"
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.shape.dim =
            [batch]
            + shape.map { size in
                var d = Onnx_TensorShapeProto.Dimension()
                d.dimValue = Int64(size)
                return d
            }
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType = tensor
        return info
    }
}

/// PyTorch's pooling windows along one axis: their number (with `ceil_mode`'s rule that a window may not start in the
/// right padding), the end padding that makes the last one fit, and each one's average divisor (the window clipped
/// to the symmetrically padded input).
private struct PoolWindows {
    let count: Int, endPad: Int, divisors: [Int]

    init(_ n: Int, _ k: Int, _ s: Int, _ p: Int, _ ceilMode: Bool) {
        var count = (n + 2 * p - k + (ceilMode ? s - 1 : 0)) / s + 1
        if ceilMode && (count - 1) * s >= n + p { count -= 1 }
        self.count = count
        endPad = max(p, (count - 1) * s + k - n - p)
        divisors = (0..<count).map { o in min(o * s - p + k, n + p) - (o * s - p) }
    }
}

private func attribute(_ name: String, int: Int) -> Onnx_AttributeProto {
    var a = Onnx_AttributeProto()
    a.name = name
    a.type = .int
    a.i = Int64(int)
    return a
}

private func attribute(_ name: String, ints: [Int]) -> Onnx_AttributeProto {
    var a = Onnx_AttributeProto()
    a.name = name
    a.type = .ints
    a.ints = ints.map(Int64.init)
    return a
}

private func attribute(_ name: String, float: Double) -> Onnx_AttributeProto {
    var a = Onnx_AttributeProto()
    a.name = name
    a.type = .float
    a.f = Float(float)
    return a
}
