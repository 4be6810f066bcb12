import SwiftAICore

/// Marks element-wise activation modules (LSUV observes them; ActivationStats hooks them).
public protocol ActivationModule: Module {}

/// `y = x·Wᵀ + b` (PyTorch's `nn.Linear`; default init as PyTorch: U(±1/√in)).
public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator: Generator = .default) {
        weight = Parameter(Tensor.zeros([outFeatures, inFeatures]))
        self.bias = bias ? Parameter(Tensor.zeros([outFeatures])) : nil
        super.init()
        Init.kaimingUniform(weight, a: 5.0.squareRoot(), generator: generator)
        let bound = 1 / Double(inFeatures).squareRoot()
        if let b = self.bias { Init.uniform(b, low: -bound, high: bound, generator: generator) }
    }

    public override func forward(_ x: Tensor) -> Tensor {
        x.linear(weight: weight.value, bias: bias?.value)
    }
}

/// 2-D convolution (PyTorch's `nn.Conv2d`; default init as PyTorch).
public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int

    public init(
        _ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
        groups: Int = 1, bias: Bool = true, generator: Generator = .default
    ) {
        require(
            inChannels % groups == 0 && outChannels % groups == 0,
            "Conv2d: in_channels \(inChannels) and out_channels \(outChannels) must be divisible by groups \(groups)")
        weight = Parameter(Tensor.zeros([outChannels, inChannels / groups, kernelSize, kernelSize]))
        self.bias = bias ? Parameter(Tensor.zeros([outChannels])) : nil
        self.stride = stride
        self.padding = padding
        self.groups = groups
        super.init()
        Init.kaimingUniform(weight, a: 5.0.squareRoot(), generator: generator)
        let bound = 1 / Double(inChannels / groups * kernelSize * kernelSize).squareRoot()
        if let b = self.bias { Init.uniform(b, low: -bound, high: bound, generator: generator) }
    }

    public override func forward(_ x: Tensor) -> Tensor {
        x.conv2d(weight: weight.value, bias: bias?.value, stride: stride, padding: padding, groups: groups)
    }
}

/// Batch normalisation over dimension 1 (shared by ``BatchNorm1d`` and ``BatchNorm2d``).
public class BatchNorm: Module {
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: Buffer?
    public let runningVar: Buffer?
    public let numBatchesTracked: Buffer?
    /// Running-statistics momentum; `nil` uses a cumulative moving average (PyTorch's `momentum=None`).
    public var momentum: Double?
    public let eps: Double
    let expectedRanks: [Int]

    init(_ numFeatures: Int, eps: Double, momentum: Double?, affine: Bool, trackRunningStats: Bool, ranks: [Int]) {
        weight = affine ? Parameter(Tensor.ones([numFeatures])) : nil
        bias = affine ? Parameter(Tensor.zeros([numFeatures])) : nil
        runningMean = trackRunningStats ? Buffer(Tensor.zeros([numFeatures])) : nil
        runningVar = trackRunningStats ? Buffer(Tensor.ones([numFeatures])) : nil
        numBatchesTracked = trackRunningStats ? Buffer(Tensor.zeros([], dtype: .int64)) : nil
        self.eps = eps
        self.momentum = momentum
        expectedRanks = ranks
        super.init()
    }

    /// A batch norm holding `other`'s parameters and buffers (the same objects) and settings.
    init(sharing other: BatchNorm) {
        (weight, bias) = (other.weight, other.bias)
        (runningMean, runningVar, numBatchesTracked) = (other.runningMean, other.runningVar, other.numBatchesTracked)
        (eps, momentum, expectedRanks) = (other.eps, other.momentum, other.expectedRanks)
        super.init()
    }

    func checkInput(_ x: Tensor) {
        require(
            expectedRanks.contains(x.rank),
            """
            \(type(of: self)): expected \(expectedRanks.map { "\($0)D" }.joined(separator: " or ")) input (got \
            \(x.rank)D input of shape \(x.shape))
            """
        )
    }

    public override func forward(_ x: Tensor) -> Tensor {
        checkInput(x)
        guard let rm = runningMean, let rv = runningVar, let nb = numBatchesTracked else {
            return x.batchNorm(weight: weight?.value, bias: bias?.value, eps: eps)
        }
        if training {
            let tracked = nb.value.item() + 1
            nb.value = Tensor(scalar: Int64(tracked))
            let m = momentum ?? 1 / tracked
            return x.batchNorm(
                weight: weight?.value, bias: bias?.value, runningMean: &rm.value, runningVar: &rv.value,
                training: true, momentum: m, eps: eps)
        }
        return x.batchNorm(
            weight: weight?.value, bias: bias?.value, runningMean: &rm.value, runningVar: &rv.value,
            training: false, eps: eps)
    }
}

/// Batch normalisation of `[N, C]` or `[N, C, L]` inputs.
public final class BatchNorm1d: BatchNorm {
    public init(
        _ numFeatures: Int, eps: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true,
        trackRunningStats: Bool = true
    ) {
        super.init(
            numFeatures, eps: eps, momentum: momentum, affine: affine, trackRunningStats: trackRunningStats,
            ranks: [2, 3])
    }
}

/// Batch normalisation of `[N, C, H, W]` inputs.
public final class BatchNorm2d: BatchNorm {
    public init(
        _ numFeatures: Int, eps: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true,
        trackRunningStats: Bool = true
    ) {
        super.init(
            numFeatures, eps: eps, momentum: momentum, affine: affine, trackRunningStats: trackRunningStats, ranks: [4])
    }
}

// MARK: Activations

public final class ReLU: Module, ActivationModule {
    public override init() { super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.relu() }
}

public final class LeakyReLU: Module, ActivationModule {
    public let negativeSlope: Double
    public init(_ negativeSlope: Double = 0.01) { self.negativeSlope = negativeSlope; super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.leakyRelu(negativeSlope) }
}

/// The lesson's `GeneralRelu`: leaky ReLU, shifted down by `sub`, optionally capped at `maxv`.
public final class GeneralRelu: Module, ActivationModule {
    public let leak: Double, sub: Double, maxv: Double?
    public init(leak: Double = 0, sub: Double = 0, maxv: Double? = nil) {
        self.leak = leak
        self.sub = sub
        self.maxv = maxv
        super.init()
    }
    public override func forward(_ x: Tensor) -> Tensor { x.generalRelu(leak: leak, sub: sub, maxv: maxv ?? .infinity) }
}

public final class Sigmoid: Module, ActivationModule {
    public override init() { super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.sigmoid() }
}

/// fastai's `SigmoidRange`: `sigmoid(x) * (high - low) + low`.
public final class SigmoidRange: Module {
    public let low: Double, high: Double
    public init(_ low: Double, _ high: Double) {
        self.low = low
        self.high = high
        super.init()
    }
    public override func forward(_ x: Tensor) -> Tensor { x.sigmoid() * (high - low) + low }
}

public final class Tanh: Module, ActivationModule {
    public override init() { super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.tanh() }
}

// MARK: Pooling and reshaping

/// What 2-D max and average pooling share: PyTorch's arguments (`stride` defaults to the kernel size).
public class Pool2d: Module {
    public let kernelSize: Int, stride: Int?, padding: Int, ceilMode: Bool
    public init(_ kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false) {
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.ceilMode = ceilMode
        super.init()
    }
}

public final class AvgPool2d: Pool2d {
    public override func forward(_ x: Tensor) -> Tensor {
        x.avgPool2d(kernel: kernelSize, stride: stride, padding: padding, ceilMode: ceilMode)
    }
}

public final class MaxPool2d: Pool2d {
    public override func forward(_ x: Tensor) -> Tensor {
        x.maxPool2d(kernel: kernelSize, stride: stride, padding: padding, ceilMode: ceilMode)
    }
}

public final class AdaptiveAvgPool2d: Module {
    public let outputSize: (Int, Int)
    public init(_ outputSize: (Int, Int)) { self.outputSize = outputSize; super.init() }
    public convenience init(_ size: Int) { self.init((size, size)) }
    public override func forward(_ x: Tensor) -> Tensor { x.adaptiveAvgPool2d(outputSize) }
}

public final class AdaptiveMaxPool2d: Module {
    public let outputSize: (Int, Int)
    public init(_ outputSize: (Int, Int)) { self.outputSize = outputSize; super.init() }
    public convenience init(_ size: Int) { self.init((size, size)) }
    public override func forward(_ x: Tensor) -> Tensor { x.adaptiveMaxPool2d(outputSize) }
}

/// Mean over height and width: `[N, C, H, W] → [N, C]` (miniai's `GlobalAvgPool`).
public final class GlobalAvgPool: Module {
    public override init() { super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.mean(dims: [-2, -1]) }
}

/// fastai's head pooling: max pool and average pool concatenated along channels (max first).
public final class AdaptiveConcatPool2d: Module {
    public let mp: AdaptiveMaxPool2d, ap: AdaptiveAvgPool2d
    public init(_ size: Int = 1) {
        mp = AdaptiveMaxPool2d(size)
        ap = AdaptiveAvgPool2d(size)
        super.init()
    }
    public override func forward(_ x: Tensor) -> Tensor { Tensor.cat([mp(x), ap(x)], dim: 1) }
}

public final class Flatten: Module {
    public let startDim: Int, endDim: Int
    public init(startDim: Int = 1, endDim: Int = -1) { self.startDim = startDim; self.endDim = endDim; super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x.flatten(startDim: startDim, endDim: endDim) }
}

/// Zeroes elements with probability `p` in training (scaling the rest by 1/(1−p)).
public final class Dropout: Module {
    public let p: Double
    public let generator: Generator
    public init(_ p: Double = 0.5, generator: Generator = .default) {
        self.p = p; self.generator = generator; super.init()
    }
    public override func forward(_ x: Tensor) -> Tensor { x.dropout(p: p, training: training, generator: generator) }
}

/// Zeroes whole channels with probability `p` in training.
public final class Dropout2d: Module {
    public let p: Double
    public let generator: Generator
    public init(_ p: Double = 0.5, generator: Generator = .default) {
        self.p = p; self.generator = generator; super.init()
    }
    public override func forward(_ x: Tensor) -> Tensor { x.dropout2d(p: p, training: training, generator: generator) }
}

public final class Identity: Module {
    public override init() { super.init() }
    public override func forward(_ x: Tensor) -> Tensor { x }
}

/// A module around a closure (fastai's `Lambda`).
public final class Lambda: Module {
    let fn: (Tensor) -> Tensor
    public init(_ fn: @escaping (Tensor) -> Tensor) { self.fn = fn; super.init() }
    public override func forward(_ x: Tensor) -> Tensor { fn(x) }
}
