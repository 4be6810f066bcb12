#if canImport(Glibc)
    import Glibc
#endif

/// An n-dimensional array with value semantics and optional gradient tracking.
///
/// A `Tensor` is a view (shape, strides in elements, offset) onto copy-on-write ``Storage``.
/// Views such as ``reshape(_:)``, ``permute(_:)`` or slicing share storage; writing into a tensor
/// whose storage is shared copies it first, so no tensor ever changes because another one did.
///
/// Gradients: set ``requiresGrad`` on a leaf, compute, call ``backward(_:retainGraph:)`` and read ``grad``.
public struct Tensor {
    @usableFromInline var storage: Storage
    /// Size of each dimension.
    public internal(set) var shape: [Int]
    /// Distance in elements between neighbours along each dimension.
    public internal(set) var strides: [Int]
    /// Position of the first element in `storage`, in elements.
    public internal(set) var offset: Int
    /// Element type.
    public let dtype: DType
    /// Autograd bookkeeping; `nil` when gradients are not tracked.
    var node: GradNode?

    init(storage: Storage, shape: [Int], strides: [Int], offset: Int, dtype: DType) {
        self.storage = storage
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.dtype = dtype
    }

    /// Uninitialised tensor with contiguous (row-major) or given strides.
    init(empty shape: [Int], dtype: DType, strides: [Int]? = nil) {
        let n = shape.reduce(1, *)
        let st = strides ?? Tensor.contiguousStrides(shape)
        self.init(
            storage: Storage(byteCount: Swift.max(n, 1) * dtype.byteSize), shape: shape, strides: st,
            offset: 0, dtype: dtype)
    }

    /// A tensor holding `values` in row-major order.
    public init<T: TensorElement>(_ values: [T], shape: [Int]) {
        let n = shape.reduce(1, *)
        require(n == values.count, "Tensor(_:shape:): \(values.count) values do not fill shape \(shape)")
        self.init(empty: shape, dtype: T.dtype)
        values.withUnsafeBufferPointer { src in
            if n > 0 { storage.data.copyMemory(from: src.baseAddress!, byteCount: n * T.dtype.byteSize) }
        }
    }

    /// A 1-D tensor of `values`.
    public init<T: TensorElement>(_ values: [T]) { self.init(values, shape: [values.count]) }

    /// A 0-D (scalar) tensor.
    public init<T: TensorElement>(scalar: T) { self.init([scalar], shape: []) }

    /// A 2-D tensor from rows of equal length.
    public init<T: TensorElement>(rows: [[T]]) {
        let cols = rows.first?.count ?? 0
        require(rows.allSatisfy { $0.count == cols }, "Tensor(rows:): rows have different lengths")
        self.init(rows.flatMap { $0 }, shape: [rows.count, cols])
    }

    // MARK: Geometry

    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Row-major strides for `shape`.
    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var st = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            st[i] = acc
            acc *= Swift.max(shape[i], 1)
        }
        return st
    }

    /// Channels-last strides (NHWC memory order) for a 4-D NCHW shape.
    public static func channelsLastStrides(_ shape: [Int]) -> [Int] {
        require(shape.count == 4, "channelsLastStrides: needs a 4-D shape, got \(shape)")
        let c = Swift.max(shape[1], 1), h = Swift.max(shape[2], 1), w = Swift.max(shape[3], 1)
        return [h * w * c, 1, w * c, c]
    }

    /// Whether elements are laid out row-major with no gaps.
    public var isContiguous: Bool {
        var expected = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != expected { return false }
            expected *= shape[i]
        }
        return true
    }

    /// Whether this is a 4-D tensor stored in NHWC order (PyTorch's `channels_last`).
    public var isChannelsLast: Bool {
        guard rank == 4 else { return false }
        let c = Swift.max(shape[1], 1), w = Swift.max(shape[3], 1), h = Swift.max(shape[2], 1)
        return (shape[0] == 1 || strides[0] == h * w * c) && (shape[1] == 1 || strides[1] == 1)
            && (shape[2] == 1 || strides[2] == w * c) && (shape[3] == 1 || strides[3] == c)
    }

    /// Whether the elements cover a gap-free block of `count` elements in some dimension order.
    public var isDense: Bool {
        if isContiguous || isChannelsLast { return true }  // the common layouts, without the sort's allocations
        let order = (0..<rank).filter { shape[$0] != 1 }.sorted { strides[$0] > strides[$1] }
        var expected = 1
        for i in order.reversed() {
            if strides[i] != expected { return false }
            expected *= shape[i]
        }
        return true
    }

    // MARK: Raw access

    /// Typed pointer to the first element of this view. The caller must respect strides.
    @inlinable
    public func pointer<T: TensorElement>(_: T.Type) -> UnsafeMutablePointer<T> {
        require(T.dtype == dtype, "pointer: tensor is \(dtype), asked for \(T.dtype)")
        return storage.data.assumingMemoryBound(to: T.self) + offset
    }

    /// Copies storage when it is shared, so in-place writes stay private to this value.
    mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = Storage(byteCount: storage.byteCount)
            copy.data.copyMemory(from: storage.data, byteCount: storage.byteCount)
            storage = copy
        }
    }

    /// Whether two tensors share storage (views of one another).
    public func sharesStorage(with other: Tensor) -> Bool { storage === other.storage }

    /// Values in row-major order, converted to `T`.
    public func scalars<T: TensorElement>(as _: T.Type = T.self) -> [T] {
        if isContiguous {  // float32 ⇄ float64 read directly: a conversion op costs microseconds on a few values
            if dtype == .float32 && T.dtype == .float64 {
                return UnsafeBufferPointer(start: pointer(Float.self), count: count).map { T(fromDouble: Double($0)) }
            }
            if dtype == .float64 && T.dtype == .float32 {
                return UnsafeBufferPointer(start: pointer(Double.self), count: count).map { T(fromDouble: $0) }
            }
        }
        let t = dtype == T.dtype ? self : self.to(T.dtype)
        let c = t.contiguous()
        let p = c.pointer(T.self)
        return Array(UnsafeBufferPointer(start: p, count: c.count))
    }

    /// Values as `Float`.
    public var floats: [Float] { scalars(as: Float.self) }
    /// Values as `Double`.
    public var doubles: [Double] { scalars(as: Double.self) }

    /// The value of a one-element tensor.
    public func item() -> Double {
        require(count == 1, "item(): tensor with \(count) elements (shape \(shape)) cannot be converted to a scalar")
        return readDouble(at: offset)
    }

    /// Reads the element at storage position `i` as a `Double`.
    func readDouble(at i: Int) -> Double {
        let d = storage.data
        switch dtype {
        case .float32: return Double(d.assumingMemoryBound(to: Float.self)[i])
        case .float64: return d.assumingMemoryBound(to: Double.self)[i]
        case .int64: return Double(d.assumingMemoryBound(to: Int64.self)[i])
        case .int32: return Double(d.assumingMemoryBound(to: Int32.self)[i])
        case .uint8: return Double(d.assumingMemoryBound(to: UInt8.self)[i])
        case .int8: return Double(d.assumingMemoryBound(to: Int8.self)[i])
        case .bool: return d.assumingMemoryBound(to: Bool.self)[i] ? 1 : 0
        case .bfloat16: return Double(d.assumingMemoryBound(to: BFloat16.self)[i].float)
        case .float16: return Double(d.assumingMemoryBound(to: Float16.self)[i])
        }
    }

    /// Storage positions of all elements in row-major order of the view.
    func elementOffsets() -> [Int] {
        var out = [Int]()
        out.reserveCapacity(count)
        if count == 0 { return out }
        var idx = [Int](repeating: 0, count: rank)
        var pos = offset
        for _ in 0..<count {
            out.append(pos)
            var d = rank - 1
            while d >= 0 {
                idx[d] += 1
                pos += strides[d]
                if idx[d] < shape[d] { break }
                pos -= strides[d] * shape[d]
                idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// Element at a full index, as `Double` (for tests and printing).
    public subscript(element index: [Int]) -> Double {
        require(index.count == rank, "subscript(element:): index \(index) for shape \(shape)")
        var pos = offset
        for (d, i) in index.enumerated() {
            require(i >= 0 && i < shape[d], "subscript(element:): index \(index) out of range for shape \(shape)")
            pos += i * strides[d]
        }
        return readDouble(at: pos)
    }
}

extension Tensor: CustomStringConvertible {
    /// PyTorch-style rendering: nested brackets, a few values at each edge for large tensors, then dtype and shape.
    public var description: String {
        let summarise = count > 1000
        let values = summarise ? [] : elementOffsets().map { readDouble(at: $0) }
        let isInt = !dtype.isFloatingPoint
        func fmt(_ v: Double) -> String {
            if dtype == .bool { return v != 0 ? "True" : "False" }
            if isInt { return String(Int64(v)) }
            if v.isNaN { return "nan" }
            if v.isInfinite { return v > 0 ? "inf" : "-inf" }
            return formatFixed(v, digits: 4)
        }
        func render(_ dim: Int, _ pos: Int, _ flatStart: Int, indent: Int) -> String {
            if dim == rank {
                return fmt(summarise ? readDouble(at: pos) : values[flatStart])
            }
            let n = shape[dim]
            let inner = shape[(dim + 1)...].reduce(1, *)
            var parts: [String] = []
            let edge = 3
            for i in 0..<n {
                if summarise && n > 2 * edge && i == edge { parts.append("..."); continue }
                if summarise && n > 2 * edge && i > edge && i < n - edge { continue }
                parts.append(render(dim + 1, pos + i * strides[dim], flatStart + i * inner, indent: indent + 1))
            }
            let sep = dim == rank - 1 ? ", " : ",\n" + String(repeating: " ", count: indent + 1)
            return "[" + parts.joined(separator: sep) + "]"
        }
        let body = rank == 0 ? fmt(readDouble(at: offset)) : render(0, offset, 0, indent: 7)
        var extra = "dtype=\(dtype), shape=\(shape)"
        if requiresGrad { extra += ", requiresGrad=true" }
        return "tensor(\(body), \(extra))"
    }
}

/// Formats `v` with `digits` decimals without Foundation.
func formatFixed(_ v: Double, digits: Int) -> String {
    if abs(v) >= 1e15 || (abs(v) < 1e-4 && v != 0) { return String(v) }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (abs(v) * scale).rounded()
    let ip = (r / scale).rounded(.down)
    var fp = String(Int64(r - ip * scale))
    while fp.count < digits { fp = "0" + fp }
    return (v < 0 && r != 0 ? "-" : "") + String(Int64(ip)) + (digits > 0 ? "." + fp : "")
}

/// Stops with `message` when `condition` is false — in every build configuration.
///
/// Swift's `precondition` drops its message in optimised builds; SwiftAI's programmer-error messages
/// (op name and shapes, as PyTorch prints them) must reach the user of a release binary too.
@inline(__always)
public func require(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #file, line: UInt = #line
) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
