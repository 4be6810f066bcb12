extension Tensor {
    /// A tensor of `shape` whose elements are not initialised, for kernels that write every element.
    /// `channelsLast` (4-D shapes only) lays it out NHWC (``channelsLastStrides(_:)``), otherwise row-major.
    public static func uninitialized(_ shape: [Int], dtype: DType = .float32, channelsLast: Bool = false) -> Tensor {
        require(shape.allSatisfy { $0 >= 0 }, "Tensor.uninitialized: negative size in shape \(shape)")
        return Tensor(
            empty: shape, dtype: dtype, strides: channelsLast ? channelsLastStrides(shape) : contiguousStrides(shape))
    }
}
