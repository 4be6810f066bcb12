#if canImport(Glibc)
    import Glibc
#endif

/// The element type of a tensor.
///
/// `float32` is the compute type, `float64` exists for finite-difference gradient checks,
/// `int64`/`int32` hold labels and indices, `uint8` images (and quantized activations), `int8` quantized
/// weights, `bool` masks from comparisons,
/// and `bfloat16`/`float16` are storage formats (convert with ``Tensor/to(_:)`` before computing).
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case float32, float64, int64, int32, uint8, int8, bool, bfloat16, float16

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .bfloat16, .float16: return 2
        case .uint8, .int8, .bool: return 1
        }
    }

    /// Whether values are real numbers (`float32`, `float64`, `bfloat16`, `float16`).
    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .bfloat16, .float16: return true
        default: return false
        }
    }

    /// Whether arithmetic kernels run on this dtype directly (others are storage-only).
    public var isCompute: Bool { self == .float32 || self == .float64 }

    public var description: String { rawValue }
}

/// Brain floating point: the upper 16 bits of an IEEE `Float`.
public struct BFloat16: Hashable, Sendable, CustomStringConvertible {
    public var bitPattern: UInt16

    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// Rounds to nearest even; NaN stays NaN.
    public init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN { bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x40; return }
        let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
        bitPattern = UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    public var float: Float { Float(bitPattern: UInt32(bitPattern) << 16) }
    public var description: String { float.description }
}

/// A Swift type that can live in a tensor's storage.
public protocol TensorElement {
    static var dtype: DType { get }
    init(fromDouble value: Double)
    var doubleValue: Double { get }
}

/// Element types the arithmetic kernels are written for: `Float` and `Double`.
public protocol FloatElement: TensorElement, BinaryFloatingPoint, SIMDScalar, Codable {
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func pow(_ x: Self, _ y: Self) -> Self
    static func sin(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
}

extension Float: FloatElement {
    public static var dtype: DType { .float32 }
    @inlinable public init(fromDouble value: Double) { self.init(value) }
    @inlinable public var doubleValue: Double { Double(self) }
    @inlinable public static func exp(_ x: Float) -> Float { expf(x) }
    @inlinable public static func log(_ x: Float) -> Float { logf(x) }
    @inlinable public static func tanh(_ x: Float) -> Float { tanhf(x) }
    @inlinable public static func pow(_ x: Float, _ y: Float) -> Float { powf(x, y) }
    @inlinable public static func sin(_ x: Float) -> Float { sinf(x) }
    @inlinable public static func cos(_ x: Float) -> Float { cosf(x) }
}

extension Double: FloatElement {
    public static var dtype: DType { .float64 }
    @inlinable public init(fromDouble value: Double) { self = value }
    @inlinable public var doubleValue: Double { self }
    @inlinable public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inlinable public static func log(_ x: Double) -> Double { Glibc.log(x) }
    @inlinable public static func tanh(_ x: Double) -> Double { Glibc.tanh(x) }
    @inlinable public static func pow(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
    @inlinable public static func sin(_ x: Double) -> Double { Glibc.sin(x) }
    @inlinable public static func cos(_ x: Double) -> Double { Glibc.cos(x) }
}

extension Int64: TensorElement {
    public static var dtype: DType { .int64 }
    /// Truncates toward zero like PyTorch's casts; NaN becomes 0 and out-of-range values saturate.
    @inlinable public init(fromDouble value: Double) {
        self = value.isNaN ? 0 : value >= 9.2e18 ? .max : value <= -9.2e18 ? .min : Int64(value)
    }
    @inlinable public var doubleValue: Double { Double(self) }
}

extension Int32: TensorElement {
    public static var dtype: DType { .int32 }
    @inlinable public init(fromDouble value: Double) {
        self = value.isNaN ? 0 : Int32(Swift.max(Swift.min(value, Double(Int32.max)), Double(Int32.min)))
    }
    @inlinable public var doubleValue: Double { Double(self) }
}

extension UInt8: TensorElement {
    public static var dtype: DType { .uint8 }
    @inlinable public init(fromDouble value: Double) {
        self = value.isNaN ? 0 : UInt8(Swift.max(Swift.min(value, 255), 0))
    }
    @inlinable public var doubleValue: Double { Double(self) }
}

extension Int8: TensorElement {
    public static var dtype: DType { .int8 }
    @inlinable public init(fromDouble value: Double) {
        self = value.isNaN ? 0 : Int8(Swift.max(Swift.min(value, 127), -128))
    }
    @inlinable public var doubleValue: Double { Double(self) }
}

extension Bool: TensorElement {
    public static var dtype: DType { .bool }
    @inlinable public init(fromDouble value: Double) { self = value != 0 }
    @inlinable public var doubleValue: Double { self ? 1 : 0 }
}

extension BFloat16: TensorElement {
    public static var dtype: DType { .bfloat16 }
    public init(fromDouble value: Double) { self.init(Float(value)) }
    public var doubleValue: Double { Double(float) }
}

extension Float16: TensorElement {
    public static var dtype: DType { .float16 }
    @inlinable public init(fromDouble value: Double) { self.init(value) }
    @inlinable public var doubleValue: Double { Double(self) }
}
