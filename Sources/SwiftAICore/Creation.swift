// Tensor factories, random sampling and dtype conversion.

/// Calls `visit` with the Swift type stored for a dtype.
protocol ElementVisitor {
    associatedtype Result
    func visit<T: TensorElement>(_: T.Type) -> Result
}

extension DType {
    func dispatch<V: ElementVisitor>(_ v: V) -> V.Result {
        switch self {
        case .float32: return v.visit(Float.self)
        case .float64: return v.visit(Double.self)
        case .int64: return v.visit(Int64.self)
        case .int32: return v.visit(Int32.self)
        case .uint8: return v.visit(UInt8.self)
        case .int8: return v.visit(Int8.self)
        case .bool: return v.visit(Bool.self)
        case .bfloat16: return v.visit(BFloat16.self)
        case .float16: return v.visit(Float16.self)
        }
    }
}

extension Tensor {
    // MARK: Constant factories

    /// A tensor filled with `value`.
    public static func full(_ shape: [Int], _ value: Double, dtype: DType = .float32) -> Tensor {
        require(shape.allSatisfy { $0 >= 0 }, "full: negative dimension in shape \(shape)")
        struct Fill: ElementVisitor {
            let t: Tensor, value: Double
            func visit<T: TensorElement>(_: T.Type) {
                let p = t.storage.data.assumingMemoryBound(to: T.self)
                p.update(repeating: T(fromDouble: value), count: t.count)
            }
        }
        let t = Tensor(empty: shape, dtype: dtype)
        dtype.dispatch(Fill(t: t, value: value))
        return t
    }

    /// Zeros.
    public static func zeros(_ shape: [Int], dtype: DType = .float32) -> Tensor {
        let n = shape.reduce(1, *)
        require(shape.allSatisfy { $0 >= 0 }, "zeros: negative dimension in shape \(shape)")
        return Tensor(
            storage: Storage(zeroedByteCount: Swift.max(n, 1) * dtype.byteSize), shape: shape,
            strides: contiguousStrides(shape), offset: 0, dtype: dtype)
    }

    /// Ones.
    public static func ones(_ shape: [Int], dtype: DType = .float32) -> Tensor { full(shape, 1, dtype: dtype) }

    /// Zeros with the shape, dtype and memory order of `other`.
    public static func zeros(like other: Tensor) -> Tensor {
        var t = zeros([other.count], dtype: other.dtype)
        t.shape = other.shape
        t.strides = stridesFollowing([other], shape: other.shape)
        return t
    }

    /// Ones with the shape and dtype of `other`.
    public static func ones(like other: Tensor) -> Tensor { full(other.shape, 1, dtype: other.dtype) }

    /// `start, start+step, …` below `end` (PyTorch's `arange`).
    public static func arange(_ start: Double = 0, _ end: Double, step: Double = 1, dtype: DType = .int64) -> Tensor {
        require(
            step != 0 && (end - start) / step >= 0, "arange: upper bound and larger bound inconsistent with step sign")
        let n = Int(((end - start) / step).rounded(.up))
        return Tensor((0..<n).map { start + Double($0) * step }, shape: [n]).to(dtype)
    }

    /// `count` evenly spaced values from `start` to `end` inclusive.
    public static func linspace(_ start: Double, _ end: Double, count: Int, dtype: DType = .float32) -> Tensor {
        require(count >= 0, "linspace: number of steps must be non-negative")
        let step = count > 1 ? (end - start) / Double(count - 1) : 0
        // PyTorch fills the second half backwards from `end` so both ends are exact.
        let vals = (0..<count).map { i in i < count / 2 ? start + step * Double(i) : end - step * Double(count - 1 - i)
        }
        return Tensor(vals, shape: [count]).to(dtype)
    }

    /// Identity matrix with `n` rows and `m` (default `n`) columns.
    public static func eye(_ n: Int, _ m: Int? = nil, dtype: DType = .float32) -> Tensor {
        let cols = m ?? n
        var v = [Double](repeating: 0, count: n * cols)
        for i in 0..<Swift.min(n, cols) { v[i * cols + i] = 1 }
        return Tensor(v, shape: [n, cols]).to(dtype)
    }

    // MARK: Random factories (explicit, seedable generator)

    /// Uniform in [0, 1).
    public static func rand(_ shape: [Int], dtype: DType = .float32, generator: Generator = .default) -> Tensor {
        uniform(shape, low: 0, high: 1, dtype: dtype, generator: generator)
    }

    /// Uniform in [low, high).
    public static func uniform(
        _ shape: [Int], low: Double, high: Double, dtype: DType = .float32,
        generator: Generator = .default
    ) -> Tensor {
        let n = shape.reduce(1, *)
        if dtype == .float32 {
            let lo = Float(low), w = Float(high - low)
            return Tensor(generator.withLock { (0..<n).map { _ in lo + w * generator.nextFloat() } }, shape: shape)
        }
        return Tensor(
            generator.withLock { (0..<n).map { _ in low + (high - low) * generator.nextDouble() } }, shape: shape
        ).to(dtype)
    }

    /// Standard normal values scaled by `std` and shifted by `mean`.
    public static func randn(
        _ shape: [Int], mean: Double = 0, std: Double = 1, dtype: DType = .float32,
        generator: Generator = .default
    ) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(generator.withLock { (0..<n).map { _ in mean + std * generator.nextNormal() } }, shape: shape).to(
            dtype)
    }

    /// Uniform integers in `low..<high`.
    public static func randint(
        _ low: Int, _ high: Int, _ shape: [Int], dtype: DType = .int64,
        generator: Generator = .default
    ) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(
            generator.withLock { (0..<n).map { _ in Int64(generator.nextInt(in: low..<high)) } }, shape: shape
        ).to(dtype)
    }

    /// 1 with probability `p`, else 0.
    public static func bernoulli(_ shape: [Int], p: Double, dtype: DType = .float32, generator: Generator = .default)
        -> Tensor
    {
        require(p >= 0 && p <= 1, "bernoulli: p must be in [0, 1], got \(p)")
        let n = shape.reduce(1, *)
        return Tensor(
            generator.withLock { (0..<n).map { _ in generator.nextDouble() < p ? Float(1) : 0 } }, shape: shape
        ).to(dtype)
    }

    // MARK: Conversion

    /// The same values as `dtype` (a no-op when already `dtype`). Differentiable between floating types.
    public func to(_ target: DType) -> Tensor {
        if target == dtype { return self }
        let src = isDense ? self : contiguous()
        let out = Tensor(empty: shape, dtype: target, strides: Tensor.stridesFollowing([src], shape: shape))
        dtype.dispatch(ConvertOuter(src: src, out: out))
        var y = out
        if Tensor.needsGrad(self) && target.isFloatingPoint {
            let back = dtype
            y.recordGrad("to", [self]) { g in [g.to(back)] }
        }
        return y
    }
}

/// Converts `src` (dense) into `out` (same memory order): dispatches on the source type, then the target.
private struct ConvertOuter: ElementVisitor {
    let src: Tensor, out: Tensor
    func visit<S: TensorElement>(_: S.Type) {
        out.dtype.dispatch(ConvertInner(src: src.pointer(S.self), out: out, n: src.count))
    }
}

private struct ConvertInner<S: TensorElement>: ElementVisitor {
    let src: UnsafeMutablePointer<S>, out: Tensor, n: Int
    func visit<D: TensorElement>(_: D.Type) {
        let d = out.pointer(D.self), s = src
        if S.self == Float.self && D.self == Double.self {
            let sf = UnsafeMutableRawPointer(s).assumingMemoryBound(to: Float.self)
            let dd = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Double.self)
            for i in 0..<n { dd[i] = Double(sf[i]) }
        } else if S.self == Double.self && D.self == Float.self {
            let sd = UnsafeMutableRawPointer(s).assumingMemoryBound(to: Double.self)
            let df = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self)
            for i in 0..<n { df[i] = Float(sd[i]) }
        } else if S.self == UInt8.self && D.self == Float.self {
            let su = UnsafeMutableRawPointer(s).assumingMemoryBound(to: UInt8.self)
            let df = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self)
            for i in 0..<n { df[i] = Float(su[i]) }
        } else if S.self == Float.self && D.self == BFloat16.self {
            // Mixed precision casts every saved activation: vectorised, rounding to nearest even as BFloat16.init.
            let sb = UnsafeMutableRawPointer(s).assumingMemoryBound(to: UInt32.self)
            let db = UnsafeMutableRawPointer(d).assumingMemoryBound(to: UInt16.self)
            Parallel.forEachChunk(n) { r in
                for i in r {
                    let b = sb[i]
                    let rounded = UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
                    db[i] = b & 0x7FFF_FFFF > 0x7F80_0000 ? UInt16(truncatingIfNeeded: b >> 16) | 0x40 : rounded
                }
            }
        } else if S.self == BFloat16.self && D.self == Float.self {
            let sb = UnsafeMutableRawPointer(s).assumingMemoryBound(to: UInt16.self)
            let df = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self)
            Parallel.forEachChunk(n) { r in for i in r { df[i] = Float(bitPattern: UInt32(sb[i]) << 16) } }
        } else {
            for i in 0..<n { d[i] = D(fromDouble: s[i].doubleValue) }
        }
    }
}
