import Foundation
import SwiftAICore

// What a model is, as data: enough to rebuild it without code (export bundles, issue #11), and fastai's
// `create_head`, which vision models are made of.

/// fastai's `create_head`: `[AdaptiveConcatPool2d, Flatten]` then, for each linear layer, BatchNorm1d → Dropout →
/// Linear (no bias) → ReLU (none after the last); dropout `ps/2` before the hidden layers and `ps` before the last;
/// `bnFinal` adds a BatchNorm1d and `yRange` a ``SigmoidRange`` at the end.
public func createHead(
    _ nf: Int, _ nOut: Int, linFtrs: [Int] = [512], ps: Double = 0.5, concatPool: Bool = true,
    firstBn: Bool = true, bnFinal: Bool = false, yRange: (Double, Double)? = nil,
    generator: Generator = .default
) -> Sequential {
    let sizes = [concatPool ? nf * 2 : nf] + linFtrs + [nOut]
    var layers: [Module] = [concatPool ? AdaptiveConcatPool2d() : AdaptiveAvgPool2d(1), Flatten()]
    for i in 0..<(sizes.count - 1) {
        let last = i == sizes.count - 2
        if i > 0 || firstBn {
            let bn = BatchNorm1d(sizes[i])
            bn.bias?.setData(Tensor.full([sizes[i]], 1e-3))  // fastai's BatchNorm init: weight 1, bias 1e-3
            layers.append(bn)
        }
        let p = last ? ps : ps / 2
        if p != 0 { layers.append(Dropout(p, generator: generator)) }
        let lin = Linear(sizes[i], sizes[i + 1], bias: !(i > 0 || firstBn), generator: generator)
        Init.kaimingNormal(lin.weight, generator: generator)
        lin.bias?.setData(Tensor.zeros([sizes[i + 1]]))
        layers.append(lin)
        if !last { layers.append(ReLU()) }
    }
    if bnFinal { layers.append(BatchNorm1d(nOut, momentum: 0.01)) }
    if let (low, high) = yRange { layers.append(SigmoidRange(low, high)) }
    return Sequential(layers)
}

/// A model SwiftAI can rebuild from a description: one of the lesson's Fashion-MNIST models, a torchvision
/// ResNet with its own classifier, or fastai's vision model (a ResNet body cut before its pooling + `createHead`).
///
/// Encoded as flat JSON (`{"kind": "vision_learner", "arch": "resnet34", "n_in": 3, "n_out": 37, "cut": -2,
/// "lin_ftrs": [512], "ps": 0.5, "concat_pool": true, "first_bn": true, "bn_final": false, "y_range": null}`), a
/// channel-pruned model with `"widths": {"0.4.0.conv1": 32, …}`; decoding validates every value, so a description
/// from a file cannot ask for an impossible or enormous model.
public enum ModelSpec: Equatable, Sendable {
    case lesson(FashionMNISTModel)
    case resnet(ResNetArch, nIn: Int, nOut: Int)
    case vision(VisionModelSpec)
    /// A model with fewer output channels in some of its ``prunableChannels`` convolutions (by name; see
    /// ``pruneChannels(of:amount:)``). Make it with ``withWidths(_:)``.
    indirect case pruned(ModelSpec, widths: [String: Int])

    /// Builds the model (random initialisation; load weights afterwards).
    public func make(generator: Generator = .default) -> Module {
        switch self {
        case let .lesson(m): return m.make(generator: generator)
        case let .resnet(arch, nIn, nOut): return arch.make(numClasses: nOut, inChannels: nIn, generator: generator)
        case let .vision(v):
            return v.make(
                from: v.arch.make(numClasses: 1000, inChannels: v.nIn, generator: generator), generator: generator)
        case let .pruned(base, _):
            let model = base.make(generator: generator)
            narrow(model)
            return model
        }
    }

    /// Input channels.
    public var nIn: Int {
        switch self {
        case .lesson: return 1
        case let .resnet(_, nIn, _): return nIn
        case let .vision(v): return v.nIn
        case let .pruned(base, _): return base.nIn
        }
    }

    /// Outputs (classes).
    public var nOut: Int {
        switch self {
        case .lesson: return 10
        case let .resnet(_, _, nOut): return nOut
        case let .vision(v): return v.nOut
        case let .pruned(base, _): return base.nOut
        }
    }

    /// Parameters the built model has at least — checked against a file's size before building, so a small file
    /// cannot make the reader allocate a large model.
    public var minimumParameterCount: Int {
        switch self {
        case .lesson: return 0
        case let .resnet(arch, nIn, nOut): return arch.bodyParameterCount(nIn: nIn) + (arch.numFeatures + 1) * nOut
        case let .vision(v):
            return v.headParameterCount
                + (v.keptChildren == ResNet.bodyNames.count ? v.arch.bodyParameterCount(nIn: v.nIn) : 0)
        case let .pruned(base, _):
            // Exact for a whole torchvision body less what pruning removed; other bounds count none of the pruned
            // layers.
            switch base {
            case .resnet: return base.minimumParameterCount - prunedParameters
            case let .vision(v) where v.keptChildren == ResNet.bodyNames.count:
                return base.minimumParameterCount - prunedParameters
            default: return base.minimumParameterCount
            }
        }
    }
}

/// fastai's `vision_learner` model: `Sequential(body, head)`, the body a torchvision ResNet's first `cut` children.
public struct VisionModelSpec: Equatable, Sendable {
    public var arch: ResNetArch
    public var nIn: Int, nOut: Int
    /// Top-level ResNet children kept in the body (fastai's `cut`; negative counts from the end of the 10).
    public var cut: Int
    public var linFtrs: [Int]
    public var ps: Double
    public var concatPool: Bool, firstBn: Bool, bnFinal: Bool
    public var yRange: (Double, Double)?

    public init(
        arch: ResNetArch, nIn: Int = 3, nOut: Int, cut: Int = -2, linFtrs: [Int] = [512], ps: Double = 0.5,
        concatPool: Bool = true, firstBn: Bool = true, bnFinal: Bool = false, yRange: (Double, Double)? = nil
    ) {
        self.arch = arch
        self.nIn = nIn
        self.nOut = nOut
        self.cut = cut
        self.linFtrs = linFtrs
        self.ps = ps
        self.concatPool = concatPool
        self.firstBn = firstBn
        self.bnFinal = bnFinal
        self.yRange = yRange
    }

    public static func == (a: VisionModelSpec, b: VisionModelSpec) -> Bool {
        a.arch == b.arch && a.nIn == b.nIn && a.nOut == b.nOut && a.cut == b.cut && a.linFtrs == b.linFtrs
            && a.ps == b.ps
            && a.concatPool == b.concatPool && a.firstBn == b.firstBn && a.bnFinal == b.bnFinal
            && a.yRange?.0 == b.yRange?.0 && a.yRange?.1 == b.yRange?.1
    }

    /// Body children kept (1…8 of conv1, bn1, relu, maxpool, layer1…layer4).
    public var keptChildren: Int { cut < 0 ? ResNet.bodyNames.count + 2 + cut : cut }

    /// Channels out of the body (fastai's `num_features_model`).
    public var bodyFeatures: Int {
        keptChildren <= 4 ? 64 : arch.numFeatures >> (ResNet.bodyNames.count - keptChildren)
    }

    /// Parameters of the head `createHead` builds.
    public var headParameterCount: Int {
        let sizes = [concatPool ? bodyFeatures * 2 : bodyFeatures] + linFtrs + [nOut]
        var n = bnFinal ? 2 * nOut : 0
        for i in 0..<(sizes.count - 1) {
            let bn = i > 0 || firstBn
            n += (bn ? 2 * sizes[i] : 0) + sizes[i] * sizes[i + 1] + (bn ? 0 : sizes[i + 1])
        }
        return n
    }

    /// The body cut from `net` (sharing its modules) and a new head.
    public func make(from net: ResNet, generator: Generator = .default) -> Sequential {
        require(
            (1...ResNet.bodyNames.count).contains(keptChildren),
            "VisionModelSpec: cut \(cut) keeps \(keptChildren) children")
        let head = createHead(
            bodyFeatures, nOut, linFtrs: linFtrs, ps: ps, concatPool: concatPool, firstBn: firstBn,
            bnFinal: bnFinal, yRange: yRange, generator: generator)
        return Sequential(net.body[0..<keptChildren], head)
    }
}

extension ResNetArch {
    /// Channels out of `layer4`.
    public var numFeatures: Int { self == .resnet18 || self == .resnet34 ? 512 : 2048 }

    /// Parameters of the body (everything before `avgpool`) with `nIn` input channels: torchvision's counts less `fc`.
    public func bodyParameterCount(nIn: Int) -> Int {
        let total: Int
        switch self {
        case .resnet18: total = 11_689_512
        case .resnet34: total = 21_797_672
        case .resnet50: total = 25_557_032
        case .resnet101: total = 44_549_160
        case .resnet152: total = 60_192_808
        }
        return total - (numFeatures + 1) * 1000 + 64 * 49 * (nIn - 3)
    }
}

/// A model description that is not valid.
public struct ModelSpecError: Error, CustomStringConvertible, Equatable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid model description: \(reason)" }
}

extension ModelSpec {
    /// The flat JSON object (see ``ModelSpec``).
    public var json: [String: Any] {
        switch self {
        case let .lesson(m): return ["kind": "lesson", "arch": m.rawValue, "n_in": 1, "n_out": 10]
        case let .resnet(arch, nIn, nOut):
            return ["kind": "torchvision", "arch": arch.rawValue, "n_in": nIn, "n_out": nOut]
        case let .vision(v):
            return [
                "kind": "vision_learner", "arch": v.arch.rawValue, "n_in": v.nIn, "n_out": v.nOut, "cut": v.cut,
                "lin_ftrs": v.linFtrs, "ps": v.ps, "concat_pool": v.concatPool, "first_bn": v.firstBn,
                "bn_final": v.bnFinal, "y_range": v.yRange.map { [$0.0, $0.1] } ?? NSNull()
            ]
        case let .pruned(base, widths): return base.json.merging(["widths": widths]) { $1 }
        }
    }

    /// Reads and validates a description: channels 1…16, classes 1…100 000, hidden sizes 1…16 384 (at most 8),
    /// dropout in [0, 1), a cut inside the body, an ordered finite `y_range`, `widths` (optional) naming prunable
    /// convolutions with 1…their channels.
    public init(json d: [String: Any]) throws {
        let base = try Self.unpruned(json: d)
        guard let w = d["widths"], !(w is NSNull) else { self = base; return }
        guard let object = w as? [String: Any] else {
            throw ModelSpecError("'widths' must be an object mapping convolution names to kept channel counts")
        }
        let groups = Dictionary(uniqueKeysWithValues: base.prunableChannels.map { ($0.conv, $0) })
        var widths: [String: Int] = [:]
        for (name, value) in object {
            guard let group = groups[name] else {
                let known = base.prunableChannels.prefix(3).map(\.conv).joined(separator: ", ")
                throw ModelSpecError(
                    """
                    'widths' names '\(name)', which is not a prunable convolution of this model (those are \(known), \
                    …)
                    """
                )
            }
            guard let n = value as? NSNumber, let i = Int(exactly: n.doubleValue), (1...group.channels).contains(i)
            else {
                throw ModelSpecError(
                    "'widths.\(name)' must be an integer in 1…\(group.channels) (its unpruned channels)")
            }
            widths[name] = i
        }
        self = base.withWidths(widths)
    }

    /// Reads the description without its `widths`.
    private static func unpruned(json d: [String: Any]) throws -> ModelSpec {
        func value<T>(_ k: String, _: T.Type) throws -> T {
            guard let v = d[k] as? T else { throw ModelSpecError("'\(k)' is missing or not a \(T.self)") }
            return v
        }
        func int(_ k: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let n = d[k] as? NSNumber, let i = Int(exactly: n.doubleValue), range.contains(i) else {
                throw ModelSpecError("'\(k)' must be an integer in \(range.lowerBound)…\(range.upperBound)")
            }
            return i
        }
        let kind = try value("kind", String.self), archName = try value("arch", String.self)
        switch kind {
        case "lesson":
            guard let m = FashionMNISTModel(rawValue: archName) else {
                throw ModelSpecError(
                    """
                    unknown lesson model '\(archName)' (known: \
                    \(FashionMNISTModel.allCases.map(\.rawValue).joined(separator: ", ")))
                    """
                )
            }
            return .lesson(m)
        case "torchvision", "vision_learner":
            guard let arch = ResNetArch(rawValue: archName) else {
                throw ModelSpecError(
                    """
                    unknown architecture '\(archName)' (known: \
                    \(ResNetArch.allCases.map(\.rawValue).joined(separator: ", ")))
                    """
                )
            }
            let nIn = try int("n_in", 1...16), nOut = try int("n_out", 1...100_000)
            if kind == "torchvision" { return .resnet(arch, nIn: nIn, nOut: nOut) }
            let cut = try int("cut", -9...8)
            guard let lin = d["lin_ftrs"] as? [NSNumber], lin.count <= 8,
                lin.allSatisfy({ Int(exactly: $0.doubleValue).map { (1...16_384).contains($0) } ?? false })
            else {
                throw ModelSpecError("'lin_ftrs' must be at most 8 integers in 1…16384")
            }
            let ps = try value("ps", NSNumber.self).doubleValue
            guard ps >= 0 && ps < 1 else { throw ModelSpecError("'ps' must be in [0, 1), got \(ps)") }
            var yRange: (Double, Double)? = nil
            if let r = d["y_range"] as? [NSNumber] {
                guard r.count == 2, r[0].doubleValue.isFinite, r[1].doubleValue.isFinite,
                    r[0].doubleValue < r[1].doubleValue
                else {
                    throw ModelSpecError("'y_range' must be two finite, increasing numbers")
                }
                yRange = (r[0].doubleValue, r[1].doubleValue)
            } else if d["y_range"] != nil && !(d["y_range"] is NSNull) {
                throw ModelSpecError("'y_range' must be null or two numbers")
            }
            let v = VisionModelSpec(
                arch: arch, nIn: nIn, nOut: nOut, cut: cut, linFtrs: lin.map(\.intValue), ps: ps,
                concatPool: try value("concat_pool", Bool.self), firstBn: try value("first_bn", Bool.self),
                bnFinal: try value("bn_final", Bool.self), yRange: yRange)
            guard (1...ResNet.bodyNames.count).contains(v.keptChildren) else {
                throw ModelSpecError("'cut' \(cut) must keep 1…\(ResNet.bodyNames.count) of \(archName)'s 10 children")
            }
            return .vision(v)
        default:
            throw ModelSpecError("unknown kind '\(kind)' (known: lesson, torchvision, vision_learner)")
        }
    }
}
