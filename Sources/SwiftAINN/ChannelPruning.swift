import SwiftAICore

// Structured channel pruning (issue #12): output channels of convolutions are removed, not masked, so the model
// gets smaller and faster. Only channels that no residual add reads are removed (docs/decisions.md); a pruned
// model is its description's ``ModelSpec/pruned(_:widths:)`` with the kept channel counts.

/// Output channels of one convolution that can be removed without touching a residual add: the convolution, the
/// BatchNorm after it and the convolutions that read them. Names are state-dict prefixes of the unpruned model.
public struct PrunableChannels: Equatable, Sendable {
    /// The convolution whose output channels are removed (`1.convs.0.0`, `layer1.0.conv1`): a key of the widths.
    public let conv: String
    /// Its BatchNorm (weight, bias and running statistics lose the same entries).
    public let norm: String
    /// Convolutions reading these channels (they lose the same input channels).
    public let consumers: [String]
    /// Output channels of the unpruned model.
    public let channels: Int
    /// Parameters one removed channel takes away from the unpruned model (filter, BatchNorm weight and bias,
    /// consumers' input slices).
    public let parametersPerChannel: Int
    /// Weights per input channel of each consumer.
    let consumerWeights: [Int]

    /// `filter`: weights of one output filter (plus its bias); `consumers`: names with weights per input channel.
    init(conv: String, norm: String, consumers: [(String, Int)], channels: Int, filter: Int) {
        self.conv = conv
        self.norm = norm
        self.consumers = consumers.map(\.0)
        consumerWeights = consumers.map(\.1)
        self.channels = channels
        parametersPerChannel = filter + 2 + consumerWeights.reduce(0, +)
    }
}

extension FashionMNISTModel {
    /// cnn: every conv but the 10-class output; resnet and wide: each ResBlock's first conv, and wide's stem.
    var prunableChannels: [PrunableChannels] {
        switch self {
        case .cnn:
            let nfs = [1, 8, 16, 32, 64, 10]
            return (0..<4).map { i in
                PrunableChannels(
                    conv: "\(i).0", norm: "\(i).1", consumers: [(i < 3 ? "\(i + 1).0" : "4", nfs[i + 2] * 9)],
                    channels: nfs[i + 1], filter: nfs[i] * 9)
            }
        case .resnet:
            let nfs = [1, 8, 16, 32, 64, 128, 256]
            return (0..<6).map { resBlock("\($0)", nfs[$0], nfs[$0 + 1]) }
        case .wide:
            let nfs = [16, 32, 64, 128, 256]
            let stem = PrunableChannels(
                conv: "0.0", norm: "0.1", consumers: [("1.convs.0.0", 32 * 9), ("1.idconv.0", 32)],
                channels: 16, filter: 25)
            return [stem] + (1...4).map { resBlock("\($0)", nfs[$0 - 1], nfs[$0]) }
        }
    }

    /// The inner channels of a 3×3 ``ResBlock`` named `name`.
    private func resBlock(_ name: String, _ ni: Int, _ nf: Int) -> PrunableChannels {
        PrunableChannels(
            conv: "\(name).convs.0.0", norm: "\(name).convs.0.1", consumers: [("\(name).convs.1.0", nf * 9)],
            channels: nf, filter: ni * 9)
    }
}

extension ResNetArch {
    /// BasicBlock's `conv1`, Bottleneck's `conv1` and `conv2`, in the first `stages.count` stages named `stages`.
    func prunableChannels(prefix: String, stages: [String]) -> [PrunableChannels] {
        var out: [PrunableChannels] = [], inPlanes = 64
        for (s, stage) in stages.enumerated() {
            let planes = 64 << s
            for b in 0..<layers[s] {
                let p = "\(prefix)\(stage).\(b)."
                switch block {
                case .basic:
                    out.append(
                        PrunableChannels(
                            conv: p + "conv1", norm: p + "bn1", consumers: [(p + "conv2", planes * 9)],
                            channels: planes, filter: inPlanes * 9))
                case .bottleneck:
                    out.append(
                        PrunableChannels(
                            conv: p + "conv1", norm: p + "bn1", consumers: [(p + "conv2", planes * 9)],
                            channels: planes, filter: inPlanes))
                    out.append(
                        PrunableChannels(
                            conv: p + "conv2", norm: p + "bn2", consumers: [(p + "conv3", planes * 4)],
                            channels: planes, filter: planes * 9))
                }
                inPlanes = planes * block.expansion
            }
        }
        return out
    }
}

extension ModelSpec {
    /// The convolutions whose output channels structured pruning removes, in model order.
    public var prunableChannels: [PrunableChannels] {
        switch self {
        case let .lesson(m): return m.prunableChannels
        case let .resnet(arch, _, _): return arch.prunableChannels(prefix: "", stages: Array(ResNet.bodyNames[4...]))
        case let .vision(v):
            return v.arch.prunableChannels(prefix: "0.", stages: (4..<max(4, v.keptChildren)).map(String.init))
        case let .pruned(base, _): return base.prunableChannels
        }
    }

    /// Structured L1 pruning of `model`, built from this description: in every prunable convolution
    /// (``prunableChannels``) the `round(amount · C)` output channels whose filters have the smallest L1 norms
    /// (PyTorch's `prune.ln_structured(n: 1, dim: 0)` criterion; ties: lower index first; at least one channel
    /// stays) are removed from the convolution, its BatchNorm and the convolutions reading them. Returns the
    /// description of the narrower model; an optimizer over `model` must be made again.
    /// - Throws: ``ModelSpecError`` when `model` is not a trainable model of this description.
    public func pruneChannels(of model: Module, amount: Double) throws -> ModelSpec {
        require((0...1).contains(amount), "pruneChannels: amount \(amount) must be in [0, 1]")
        let modules = Dictionary(model.namedModules(), uniquingKeysWith: { a, _ in a })
        let resolved = try prunableChannels.map { try ($0, $0.layers(in: modules)) }
        // Every layer is ranked on the weights before any is narrowed, as ln_structured on each layer would.
        let keeps = resolved.map { _, layers in
            let w = layers.conv.weight.value
            let norms = noGrad { w.to(.float64).reshape([w.shape[0], -1]).abs().sum(dims: [1]) }.doubles
            let k = min(Int((amount * Double(norms.count)).rounded(.toNearestOrEven)), norms.count - 1)
            let pruned = Set(
                norms.indices.sorted { norms[$0] < norms[$1] || (norms[$0] == norms[$1] && $0 < $1) }.prefix(k))
            return norms.indices.filter { !pruned.contains($0) }
        }
        var widths = self.widths
        for ((group, layers), keep) in zip(resolved, keeps) {
            layers.keep(keep)
            widths[group.conv] = keep.count
        }
        return unpruned.withWidths(widths)
    }

    /// Kept output channels per pruned convolution (empty for an unpruned model).
    public var widths: [String: Int] {
        if case let .pruned(_, w) = self { return w }
        return [:]
    }

    /// The description without pruning.
    public var unpruned: ModelSpec {
        if case let .pruned(base, _) = self { return base }
        return self
    }

    /// This description with the given convolutions narrowed to `widths` channels (merged with any already
    /// pruned; counts equal to the original are dropped, so no widths is the unpruned model).
    public func withWidths(_ widths: [String: Int]) -> ModelSpec {
        let channels = Dictionary(uniqueKeysWithValues: prunableChannels.map { ($0.conv, $0.channels) })
        let merged = self.widths.merging(widths) { $1 }.filter { name, w in
            require(
                channels[name].map { (1...$0).contains(w) } ?? false,
                "ModelSpec.withWidths: \(name) is not a prunable convolution or \(w) is not in 1…its channels")
            return w != channels[name]
        }
        return merged.isEmpty ? unpruned : .pruned(unpruned, widths: merged)
    }

    /// Parameters the unpruned model loses by its widths: each group's channels times their parameters, less the
    /// weights of a convolution that one group narrows as consumer and another as producer (counted twice).
    var prunedParameters: Int {
        let groups = prunableChannels, widths = self.widths
        let removed = Dictionary(
            uniqueKeysWithValues: groups.map { ($0.conv, $0.channels - (widths[$0.conv] ?? $0.channels)) })
        let channels = Dictionary(uniqueKeysWithValues: groups.map { ($0.conv, $0.channels) })
        return groups.reduce(0) { sum, g in
            let shared = zip(g.consumers, g.consumerWeights).reduce(0) { s, c in
                s + (removed[c.0].map { $0 * c.1 / channels[c.0]! } ?? 0)
            }
            return sum + removed[g.conv]! * (g.parametersPerChannel - shared)
        }
    }

    /// Narrows a freshly built model of ``unpruned`` to ``widths`` (the first channels; weights are loaded next).
    func narrow(_ model: Module) {
        let modules = Dictionary(model.namedModules(), uniquingKeysWith: { a, _ in a })
        for group in prunableChannels {
            guard let w = widths[group.conv] else { continue }
            do { try group.layers(in: modules).keep(Array(0..<w)) } catch { fatalError("ModelSpec.make: \(error)") }
        }
    }
}

/// The modules of one ``PrunableChannels`` group in a model.
struct ChannelLayers {
    let conv: Conv2d, norm: BatchNorm, consumers: [Conv2d]

    /// Keeps the output channels `index` (ascending) and drops the others everywhere they appear.
    func keep(_ index: [Int]) {
        let i = Tensor(index.map(Int64.init))
        func select(_ p: Parameter?, _ dim: Int) {
            guard let p else { return }
            p.value = p.value.detached().indexSelect(dim: dim, index: i).contiguous().requiringGrad(p.requiresGrad)
        }
        select(conv.weight, 0)
        select(conv.bias, 0)
        select(norm.weight, 0)
        select(norm.bias, 0)
        for b in [norm.runningMean, norm.runningVar].compactMap({ $0 }) {
            b.value = b.value.indexSelect(dim: 0, index: i).contiguous()
        }
        for c in consumers { select(c.weight, 1) }
    }
}

extension PrunableChannels {
    /// Finds the group's modules in `modules` (by name) and checks they fit together.
    func layers(in modules: [String: Module]) throws -> ChannelLayers {
        func find<T>(_ name: String, _: T.Type) throws -> T {
            guard let m = modules[name] as? T else {
                throw ModelSpecError(
                    "the model has no \(T.self) '\(name)' (fused for inference, or not built from this description)")
            }
            return m
        }
        let conv = try find(conv, Conv2d.self), norm = try find(norm, BatchNorm.self)
        let consumers = try self.consumers.map { try find($0, Conv2d.self) }
        let c = conv.weight.shape[0]
        guard conv.groups == 1, norm.weight?.shape[0] ?? c == c, norm.runningMean?.value.shape[0] ?? c == c,
            consumers.allSatisfy({ $0.groups == 1 && $0.weight.shape[1] == c })
        else {
            throw ModelSpecError(
                "'\(self.conv)' (\(c) channels), '\(self.norm)' and \(self.consumers) do not fit together")
        }
        return ChannelLayers(conv: conv, norm: norm, consumers: consumers)
    }
}
