import SwiftAICore

/// The lesson's Fashion-MNIST models, layer for layer as `reference/pytorch_fmnist.py` builds them, so their
/// state dicts load PyTorch's weights and theirs load ours.
public enum FashionMNISTModel: String, CaseIterable, Sendable {
    /// Plain conv net: four stride-2 conv/BN/GeneralRelu blocks, a conv head to 10 classes (30 274 parameters).
    case cnn
    /// `13_resnet`: six ResBlocks (8…256 channels), flatten, linear, BatchNorm1d (1 228 404 parameters).
    case resnet
    /// `14_augment`'s model: 5×5 conv stem, four ResBlocks (16…256), global pool, linear, BatchNorm1d.
    case wide

    /// The lesson's activation: `GeneralRelu(leak: 0.1, sub: 0.4)`.
    public static let activation: ActivationFactory = { GeneralRelu(leak: 0.1, sub: 0.4) }

    /// Builds the model with Kaiming-normal conv weights (leak 0.1), as the reference script initialises it.
    public func make(generator: Generator = .default) -> Sequential {
        let act = FashionMNISTModel.activation
        let norm: NormFactory = { BatchNorm2d($0) }
        let model: Sequential
        switch self {
        case .cnn:
            let nfs = [1, 8, 16, 32, 64]
            var layers: [Module] = (0..<4).map {
                conv(nfs[$0], nfs[$0 + 1], act: act, norm: norm, generator: generator)
            }
            layers += [Conv2d(64, 10, kernelSize: 3, stride: 2, padding: 1, generator: generator), Flatten()]
            model = Sequential(layers)
        case .resnet:
            let nfs = [1, 8, 16, 32, 64, 128, 256]
            var layers: [Module] = (0..<6).map {
                ResBlock(nfs[$0], nfs[$0 + 1], stride: $0 == 0 ? 1 : 2, act: act, norm: norm, generator: generator)
            }
            layers += [Flatten(), Linear(256, 10, bias: false, generator: generator), BatchNorm1d(10)]
            model = Sequential(layers)
        case .wide:
            let nfs = [16, 32, 64, 128, 256]
            var layers: [Module] = [conv(1, 16, ks: 5, stride: 1, act: act, norm: norm, generator: generator)]
            layers += (0..<4).map {
                ResBlock(nfs[$0], nfs[$0 + 1], stride: 2, act: act, norm: norm, generator: generator)
            }
            layers += [
                AdaptiveAvgPool2d(1), Flatten(), Linear(256, 10, bias: false, generator: generator), BatchNorm1d(10)
            ]
            model = Sequential(layers)
        }
        for m in model.modules() {
            if let c = m as? Conv2d { Init.kaimingNormal(c.weight, a: 0.1, generator: generator) }
        }
        return model
    }
}
