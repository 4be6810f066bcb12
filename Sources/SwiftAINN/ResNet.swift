import SwiftAICore

// torchvision's ResNets (`torchvision/models/resnet.py`, v0.24), module for module, so that state-dict keys,
// shapes and parameter order are torchvision's and its weights load strictly.

/// torchvision's `conv3x3`: 3×3, padding 1, no bias.
private func conv3x3(_ inPlanes: Int, _ outPlanes: Int, stride: Int = 1, groups: Int = 1, generator: Generator)
    -> Conv2d
{
    Conv2d(
        inPlanes, outPlanes, kernelSize: 3, stride: stride, padding: 1, groups: groups, bias: false,
        generator: generator)
}

/// torchvision's `conv1x1`: 1×1, no bias.
private func conv1x1(_ inPlanes: Int, _ outPlanes: Int, stride: Int = 1, generator: Generator) -> Conv2d {
    Conv2d(inPlanes, outPlanes, kernelSize: 1, stride: stride, bias: false, generator: generator)
}

/// torchvision's `BasicBlock` (expansion 1): `relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))`.
///
/// The stride is on `conv1`; `downsample` (1×1 conv with the stride, then BatchNorm) matches the shortcut's shape.
public final class BasicBlock: Module {
    /// Output channels per `planes`.
    public static let expansion = 1

    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let relu: ReLU
    public let conv2: Conv2d
    public let bn2: BatchNorm2d
    public let downsample: Sequential?

    /// `groups` and `baseWidth` exist for signature parity with ``Bottleneck``; torchvision only allows 1 and 64.
    public init(
        inPlanes: Int, planes: Int, stride: Int = 1, downsample: Sequential? = nil, groups: Int = 1,
        baseWidth: Int = 64, generator: Generator = .default
    ) {
        require(
            groups == 1 && baseWidth == 64,
            "BasicBlock: only supports groups=1 and base_width=64 (got groups \(groups), base_width \(baseWidth))")
        conv1 = conv3x3(inPlanes, planes, stride: stride, generator: generator)
        bn1 = BatchNorm2d(planes)
        relu = ReLU()
        conv2 = conv3x3(planes, planes, generator: generator)
        bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor {
        let out = bn2(conv2(relu(bn1(conv1(x)))))
        return relu(out + (downsample?(x) ?? x))
    }

    public override func fusedForInference() -> Module {
        fusedTorchvisionBlock([(conv1, bn1), (conv2, bn2)], downsample: downsample, block: self)
    }
}

/// torchvision's `Bottleneck` (expansion 4, "ResNet v1.5": the stride is on the 3×3 `conv2`).
///
/// 1×1 conv to `width = Int(planes · baseWidth/64) · groups`, grouped 3×3 conv, 1×1 conv to `planes · 4`;
/// `relu` follows each of the first two BatchNorms and the residual add.
public final class Bottleneck: Module {
    /// Output channels per `planes`.
    public static let expansion = 4

    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let conv2: Conv2d
    public let bn2: BatchNorm2d
    public let conv3: Conv2d
    public let bn3: BatchNorm2d
    public let relu: ReLU
    public let downsample: Sequential?

    public init(
        inPlanes: Int, planes: Int, stride: Int = 1, downsample: Sequential? = nil, groups: Int = 1,
        baseWidth: Int = 64, generator: Generator = .default
    ) {
        let width = Int(Double(planes) * (Double(baseWidth) / 64)) * groups
        conv1 = conv1x1(inPlanes, width, generator: generator)
        bn1 = BatchNorm2d(width)
        conv2 = conv3x3(width, width, stride: stride, groups: groups, generator: generator)
        bn2 = BatchNorm2d(width)
        conv3 = conv1x1(width, planes * Bottleneck.expansion, generator: generator)
        bn3 = BatchNorm2d(planes * Bottleneck.expansion)
        relu = ReLU()
        self.downsample = downsample
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor {
        var out = relu(bn1(conv1(x)))
        out = relu(bn2(conv2(out)))
        out = bn3(conv3(out))
        return relu(out + (downsample?(x) ?? x))
    }

    public override func fusedForInference() -> Module {
        fusedTorchvisionBlock([(conv1, bn1), (conv2, bn2), (conv3, bn3)], downsample: downsample, block: self)
    }
}

/// torchvision's `ResNet` (without dilation or a custom norm layer).
///
/// Children are named as torchvision names them (`conv1`, `bn1`, `relu`, `maxpool`, `layer1`…`layer4`, `avgpool`,
/// `fc`), so ``Module/stateDict()`` has torchvision's keys (`layer2.0.downsample.0.weight`, `bn1.num_batches_tracked`,
/// …)
/// and ``Module/load(stateDict:strict:)`` accepts torchvision's state dicts.
public final class ResNet: Module {
    /// Which residual block the stages are made of.
    public enum Block: Sendable {
        /// ``BasicBlock`` (resnet18/34).
        case basic
        /// ``Bottleneck`` (resnet50/101/152, ResNeXt, wide ResNets).
        case bottleneck

        /// Output channels per `planes`: 1 or 4.
        public var expansion: Int { self == .basic ? BasicBlock.expansion : Bottleneck.expansion }
    }

    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let relu: ReLU
    public let maxpool: MaxPool2d
    public let layer1: Sequential
    public let layer2: Sequential
    public let layer3: Sequential
    public let layer4: Sequential
    public let avgpool: AdaptiveAvgPool2d
    public let fc: Linear

    /// Channels out of `layer4`, the input size of `fc` (512 for ``Block/basic``, 2048 for ``Block/bottleneck``).
    public let numFeatures: Int

    /// Builds `ResNet(block, layers, num_classes, zero_init_residual, groups, width_per_group)` and initialises it as
    /// torchvision does: convolutions Kaiming-normal (fan out, ReLU), BatchNorm weight 1 and bias 0, `fc` at
    /// `nn.Linear`'s default. With `zeroInitResidual` the last BatchNorm of every block starts with weight 0.
    /// `inChannels` (torchvision: always 3) sets the stem's input channels.
    public init(
        block: Block, layers: [Int], numClasses: Int = 1000, inChannels: Int = 3, groups: Int = 1,
        widthPerGroup: Int = 64, zeroInitResidual: Bool = false, generator: Generator = .default
    ) {
        require(
            layers.count == 4 && layers.allSatisfy { $0 >= 1 },
            "ResNet: layers must be four block counts ≥ 1 (got \(layers))")
        require(
            block == .bottleneck || (groups == 1 && widthPerGroup == 64),
            """
            ResNet: BasicBlock only supports groups=1 and width_per_group=64 (got groups \(groups), width_per_group \
            \(widthPerGroup))
            """
        )
        var inPlanes = 64
        func makeLayer(_ planes: Int, _ blocks: Int, stride: Int) -> Sequential {
            let outPlanes = planes * block.expansion
            var downsample: Sequential? = nil
            if stride != 1 || inPlanes != outPlanes {
                downsample = Sequential(
                    conv1x1(inPlanes, outPlanes, stride: stride, generator: generator), BatchNorm2d(outPlanes))
            }
            var mods: [Module] = []
            for i in 0..<blocks {
                let s = i == 0 ? stride : 1, ds = i == 0 ? downsample : nil
                switch block {
                case .basic:
                    mods.append(
                        BasicBlock(
                            inPlanes: inPlanes, planes: planes, stride: s, downsample: ds, groups: groups,
                            baseWidth: widthPerGroup, generator: generator))
                case .bottleneck:
                    mods.append(
                        Bottleneck(
                            inPlanes: inPlanes, planes: planes, stride: s, downsample: ds, groups: groups,
                            baseWidth: widthPerGroup, generator: generator))
                }
                inPlanes = outPlanes
            }
            return Sequential(mods)
        }
        conv1 = Conv2d(inChannels, 64, kernelSize: 7, stride: 2, padding: 3, bias: false, generator: generator)
        bn1 = BatchNorm2d(64)
        relu = ReLU()
        maxpool = MaxPool2d(3, stride: 2, padding: 1)
        layer1 = makeLayer(64, layers[0], stride: 1)
        layer2 = makeLayer(128, layers[1], stride: 2)
        layer3 = makeLayer(256, layers[2], stride: 2)
        layer4 = makeLayer(512, layers[3], stride: 2)
        avgpool = AdaptiveAvgPool2d(1)
        numFeatures = 512 * block.expansion
        fc = Linear(numFeatures, numClasses, generator: generator)
        super.init()
        // BatchNorm2d already starts at weight 1, bias 0, as torchvision sets it.
        for m in modules() {
            if let c = m as? Conv2d {
                Init.kaimingNormal(c.weight, mode: .fanOut, nonlinearity: .relu, generator: generator)
            }
        }
        if zeroInitResidual {
            for m in modules() {
                if let b = m as? Bottleneck, let w = b.bn3.weight { Init.zeros(w) }
                if let b = m as? BasicBlock, let w = b.bn2.weight { Init.zeros(w) }
            }
        }
    }

    /// conv1, bn1, relu, maxpool, layer1…layer4, avgpool, flatten, fc.
    public override func forward(_ x: Tensor) -> Tensor {
        fc(avgpool(features(x)).flatten(startDim: 1))
    }

    public override func fusedForInference() -> Module {
        Sequential(
            [FusedConv2d(conv1, bn: bn1, activation: relu, epilogue: [.leakyRelu(0)]), maxpool]
                + [layer1, layer2, layer3, layer4].map { $0.fusedForInference() } + [avgpool, Flatten(), fc])
    }

    /// The body's output: `[N, numFeatures, H/32, W/32]` (everything before `avgpool`).
    public func features(_ x: Tensor) -> Tensor {
        let stem = maxpool(relu(bn1(conv1(x))))
        return layer4(layer3(layer2(layer1(stem))))
    }

    /// Everything before `avgpool` as a `Sequential` of the same module instances (conv1, bn1, relu, maxpool,
    /// layer1…layer4), named `0`…`7` as fastai's `create_body` names `model[0]` (`4.0.conv1.weight` is
    /// `layer1.0.conv1.weight`).
    public var body: Sequential { Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4) }

    /// The torchvision names of ``body``'s members, by index.
    public static let bodyNames = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]

    /// torchvision's `resnet18`: BasicBlock, [2, 2, 2, 2] (11 689 512 parameters with 1000 classes).
    public static func resnet18(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet
    {
        ResNet(
            block: .basic, layers: [2, 2, 2, 2], numClasses: numClasses, inChannels: inChannels, generator: generator)
    }

    /// torchvision's `resnet34`: BasicBlock, [3, 4, 6, 3] (21 797 672 parameters).
    public static func resnet34(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet
    {
        ResNet(
            block: .basic, layers: [3, 4, 6, 3], numClasses: numClasses, inChannels: inChannels, generator: generator)
    }

    /// torchvision's `resnet50`: Bottleneck, [3, 4, 6, 3] (25 557 032 parameters).
    public static func resnet50(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet
    {
        ResNet(
            block: .bottleneck, layers: [3, 4, 6, 3], numClasses: numClasses, inChannels: inChannels,
            generator: generator)
    }

    /// torchvision's `resnet101`: Bottleneck, [3, 4, 23, 3] (44 549 160 parameters).
    public static func resnet101(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet
    {
        ResNet(
            block: .bottleneck, layers: [3, 4, 23, 3], numClasses: numClasses, inChannels: inChannels,
            generator: generator)
    }

    /// torchvision's `resnet152`: Bottleneck, [3, 8, 36, 3] (60 192 808 parameters).
    public static func resnet152(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet
    {
        ResNet(
            block: .bottleneck, layers: [3, 8, 36, 3], numClasses: numClasses, inChannels: inChannels,
            generator: generator)
    }
}

/// The torchvision ResNet architectures by name (`--arch resnet34`).
public enum ResNetArch: String, CaseIterable, Sendable {
    case resnet18, resnet34, resnet50, resnet101, resnet152

    /// The residual block the stages are made of.
    public var block: ResNet.Block { self == .resnet18 || self == .resnet34 ? .basic : .bottleneck }

    /// Blocks per stage (torchvision's `layers`).
    public var layers: [Int] {
        switch self {
        case .resnet18: return [2, 2, 2, 2]
        case .resnet34, .resnet50: return [3, 4, 6, 3]
        case .resnet101: return [3, 4, 23, 3]
        case .resnet152: return [3, 8, 36, 3]
        }
    }

    /// Builds the architecture with torchvision's initialisation (`inChannels` sets the stem's input channels).
    public func make(numClasses: Int = 1000, inChannels: Int = 3, generator: Generator = .default) -> ResNet {
        ResNet(block: block, layers: layers, numClasses: numClasses, inChannels: inChannels, generator: generator)
    }
}
