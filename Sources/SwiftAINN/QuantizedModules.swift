import SwiftAICore

// The modules of an int8 model (``Module/quantizedStatic(observer:calibration:)``): uint8 activations flow between
// them, each knowing the quantization of what it receives and makes. Names are the float model's (`layer1.0.conv1`),
// so the int8 export bundle reads like PyTorch's quantized state dict.

/// float32 → uint8 codes (PyTorch's `QuantStub` once converted).
public final class Quantize: Module {
    public let params: QParams
    /// Where its parameters are stored: `<name>.input_scale`, `<name>.input_zero_point`.
    public let name: String

    public init(_ params: QParams, name: String) {
        self.params = params
        self.name = name
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { x.quantized(params) }
}

/// uint8 codes → float32 (PyTorch's `DeQuantStub` once converted).
public final class Dequantize: Module {
    public let params: QParams

    public init(_ params: QParams) {
        self.params = params
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { x.dequantized(params) }
}

/// A fused convolution (BatchNorm folded, activation and residual add as post-ops) on uint8 activations.
public final class QuantizedConv2d: Module {
    public let conv: Int8Conv
    /// The float model's name of the convolution.
    public let name: String

    public init(_ conv: Int8Conv, name: String) {
        self.conv = conv
        self.name = name
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { conv(x) }

    public func forward(_ x: Tensor, residual: Tensor) -> Tensor { conv(x, residual: residual) }
}

/// A residual block on uint8 activations: `last(main(x), residual: shortcut(x))`.
public final class QuantizedResidual: Module {
    public let main: Sequential
    public let last: QuantizedConv2d
    public let shortcut: Module

    public init(main: Sequential, last: QuantizedConv2d, shortcut: Module) {
        self.main = main
        self.last = last
        self.shortcut = shortcut
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { last.forward(main(x), residual: shortcut(x)) }
}

/// Max or average pooling of uint8 codes (the quantization is unchanged).
public final class QuantizedPool2d: Module {
    public let kernelSize: Int, stride: Int?, padding: Int, ceilMode: Bool
    /// nil for max pooling; the input's zero point for average pooling.
    public let averageZeroPoint: Int32?

    public init(_ pool: MaxPool2d) {
        (kernelSize, stride, padding, ceilMode, averageZeroPoint) = (
            pool.kernelSize, pool.stride, pool.padding, pool.ceilMode, nil
        )
        super.init()
    }

    public init(_ pool: AvgPool2d, zeroPoint: Int32) {
        (kernelSize, stride, padding, ceilMode, averageZeroPoint) = (
            pool.kernelSize, pool.stride, pool.padding, pool.ceilMode, zeroPoint
        )
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor {
        if let zp = averageZeroPoint {
            return x.quantizedAvgPool2d(
                kernel: kernelSize, stride: stride, padding: padding, ceilMode: ceilMode, zeroPoint: zp)
        }
        return x.quantizedMaxPool2d(kernel: kernelSize, stride: stride, padding: padding, ceilMode: ceilMode)
    }
}

/// A linear layer with int8 weights (float32 in and out): static with fixed input quantization, or dynamic.
public final class QuantizedLinear: Module {
    public let linear: Int8Linear
    public let name: String

    public init(_ linear: Int8Linear, name: String) {
        self.linear = linear
        self.name = name
        super.init()
    }

    public override func forward(_ x: Tensor) -> Tensor { linear(x) }
}
