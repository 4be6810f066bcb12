import SwiftAICore

// Inference fusion (``Module/fusedForInference()``): Conv2d → BatchNorm2d → activation becomes one oneDNN kernel
// with the BatchNorm folded into its weights and the activation (and a residual block's add) as post-ops, the
// graph onnxruntime runs. Blocks that know their own structure (torchvision's BasicBlock/Bottleneck, the lesson's
// ResBlock, ResNet) override `fusedForInference()` with the helpers below.

/// A convolution with BatchNorm folded in and its epilogue fused; built by ``Module/fusedForInference()``.
public final class FusedConv2d: Module {
    public let conv: InferenceConv
    /// The Conv2d, BatchNorm2d and activation this was made from (int8 quantization names its tensors after the
    /// first; quantization-aware training observes the last's output).
    public let sources: [ObjectIdentifier]

    /// Folds `bn` (evaluation statistics) into `conv`: `w·γ/√(σ²+ε)`, `(b − μ)·γ/√(σ²+ε) + β`.
    public init(_ conv: Conv2d, bn: BatchNorm2d?, activation: Module? = nil, epilogue: [ConvEpilogue]) {
        var w = conv.weight.value.detached().to(.float32)
        var b = conv.bias?.value.detached().to(.float32) ?? Tensor.zeros([w.shape[0]])
        if let bn, let mean = bn.runningMean?.value, let variance = bn.runningVar?.value {
            var scale = 1 / (variance.to(.float32) + bn.eps).sqrt()
            if let g = bn.weight?.value { scale = scale * g.detached().to(.float32) }
            w = w * scale.reshape([-1, 1, 1, 1])
            b = (b - mean.to(.float32)) * scale
            if let beta = bn.bias?.value { b = b + beta.detached().to(.float32) }
        }
        self.conv = InferenceConv(
            weight: w, bias: b, stride: conv.stride, padding: conv.padding, groups: conv.groups,
            epilogue: epilogue)
        sources = [conv, bn, activation].compactMap { $0.map(ObjectIdentifier.init) }
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { conv(x) }

    /// The convolution with `residual` added before the activation (the epilogue includes
    /// ``ConvEpilogue/addResidual``).
    public func forward(_ x: Tensor, residual: Tensor) -> Tensor { conv(x, residual: residual) }

    /// The epilogue computing `act`, or nil when `act` is not an activation oneDNN can fuse.
    public static func epilogue(of act: Module) -> [ConvEpilogue]? {
        switch act {
        case is ReLU: return [.leakyRelu(0)]
        case let a as LeakyReLU: return [.leakyRelu(a.negativeSlope)]
        case let a as GeneralRelu:
            return [.leakyRelu(a.leak)] + (a.sub == 0 ? [] : [.add(-a.sub)]) + (a.maxv.map { [.clampMax($0)] } ?? [])
        default: return nil
        }
    }

    /// `[Conv2d, BatchNorm2d?, activation?]` at the start of `layers` fused, with `before` ahead of the activation;
    /// nil if `layers` does not start with a Conv2d. Also returns how many layers it took.
    static func fuse(prefixOf layers: ArraySlice<Module>, before: [ConvEpilogue] = []) -> (FusedConv2d, taken: Int)? {
        guard let conv = layers.first as? Conv2d else { return nil }
        var i = layers.startIndex + 1
        var bn: BatchNorm2d? = nil
        if i < layers.endIndex, let b = layers[i] as? BatchNorm2d, b.runningMean != nil {
            bn = b
            i += 1
        }
        var epilogue = before
        var activation: Module? = nil
        if i < layers.endIndex, let act = FusedConv2d.epilogue(of: layers[i]) {
            epilogue += act
            activation = layers[i]
            i += 1
        }
        return (FusedConv2d(conv, bn: bn, activation: activation, epilogue: epilogue), i - layers.startIndex)
    }

    /// The whole of `layers` as one fused convolution ending in `epilogue`, or nil if they are not
    /// `[Conv2d, BatchNorm2d?]` (an activation of their own would run before the residual add).
    static func fuse(exactly layers: [Module], epilogue: [ConvEpilogue]) -> FusedConv2d? {
        guard let (f, taken) = fuse(prefixOf: layers[...], before: epilogue), taken == layers.count,
            f.conv.epilogue == epilogue
        else { return nil }
        return f
    }
}

/// A residual block for inference: `last(main(x), residual: shortcut(x))`, the add and activation inside `last`.
public final class FusedResidual: Module {
    public let main: Sequential
    public let last: FusedConv2d
    public let shortcut: Module
    /// The block this was made from (quantization-aware training observes its output).
    public let source: ObjectIdentifier

    public init(main: [Module], last: FusedConv2d, shortcut: Module, source: Module) {
        self.main = Sequential(main)
        self.last = last
        self.shortcut = shortcut
        self.source = ObjectIdentifier(source)
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { last.forward(main(x), residual: shortcut(x)) }
}

extension Sequential {
    /// Fuses runs of `[Conv2d, BatchNorm2d?, activation?]`, drops Dropout, fuses the other layers recursively.
    func fusedLayers() -> Sequential {
        var out: [Module] = []
        var i = layers.startIndex
        while i < layers.endIndex {
            if let (f, taken) = FusedConv2d.fuse(prefixOf: layers[i...]) {
                out.append(f)
                i += taken
                continue
            }
            if !(layers[i] is Dropout || layers[i] is Dropout2d) { out.append(layers[i].fusedForInference()) }
            i += 1
        }
        return Sequential(out)
    }
}

/// The convolution chain `[(conv, bn)]` of a torchvision block fused; the last adds the residual, then ReLU.
func fusedTorchvisionBlock(_ pairs: [(Conv2d, BatchNorm2d)], downsample: Sequential?, block: Module) -> FusedResidual {
    let relu: [ConvEpilogue] = [.leakyRelu(0)]
    let main = pairs.dropLast().map { FusedConv2d($0.0, bn: $0.1, epilogue: relu) }
    let last = FusedConv2d(pairs.last!.0, bn: pairs.last!.1, epilogue: [.addResidual] + relu)
    return FusedResidual(main: main, last: last, shortcut: downsample?.fusedForInference() ?? Identity(), source: block)
}
