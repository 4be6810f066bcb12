/// A function applied to every element (`Float` or `Double`).
protocol UnaryMap {
    func apply<T: FloatElement>(_ x: T) -> T
}

/// A function of two broadcast operands.
protocol BinaryMap {
    func apply<T: FloatElement>(_ a: T, _ b: T) -> T
}

/// A predicate of two broadcast operands (comparisons).
protocol ComparePredicate {
    func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool
}

extension Tensor {
    /// Stops with PyTorch-style wording unless the dtype is a compute type.
    func requireCompute(_ op: String) {
        require(dtype.isCompute, "\(op): not implemented for dtype \(dtype) (convert with .to(.float32))")
    }

    /// `f` applied elementwise (no autograd). Dense inputs keep their memory order.
    func map<F: UnaryMap>(_ f: F, _ op: String) -> Tensor {
        requireCompute(op)
        switch dtype {
        case .float32: return mapKernel(f, Float.self)
        default: return mapKernel(f, Double.self)
        }
    }

    private func mapKernel<T: FloatElement, F: UnaryMap>(_ f: F, _: T.Type) -> Tensor {
        let n = count
        if isDense {
            let out = Tensor(empty: shape, dtype: dtype, strides: Tensor.stridesFollowing([self], shape: shape))
            let src = pointer(T.self), dst = out.pointer(T.self)
            Parallel.forEachChunk(n) { r in
                for i in r { dst[i] = f.apply(src[i]) }
            }
            return out
        }
        let out = Tensor(empty: shape, dtype: dtype)
        let plan = LoopPlan(shape: shape, operands: [(out.strides, 0), (strides, offset)])
        let base = storage.data.assumingMemoryBound(to: T.self)
        let dst0 = out.storage.data.assumingMemoryBound(to: T.self)
        let si = plan.innerStride(1)
        Parallel.forEachChunk(n) { r in
            plan.run(r) { offs, len in
                let d = dst0 + offs[0], s = base + offs[1]
                for i in 0..<len { d[i] = f.apply(s[i * si]) }
            }
        }
        return out
    }

    /// `f` applied to broadcast pairs (no autograd).
    static func zipMap<F: BinaryMap>(_ a: Tensor, _ b: Tensor, _ f: F, _ op: String) -> Tensor {
        a.requireCompute(op)
        require(
            a.dtype == b.dtype, "\(op): expected both operands to have the same dtype, got \(a.dtype) and \(b.dtype)")
        switch a.dtype {
        case .float32: return zipKernel(a, b, f, op, Float.self)
        default: return zipKernel(a, b, f, op, Double.self)
        }
    }

    private static func zipKernel<T: FloatElement, F: BinaryMap>(
        _ a: Tensor, _ b: Tensor, _ f: F, _ op: String,
        _: T.Type
    ) -> Tensor {
        guard let shape = broadcastShapes(a.shape, b.shape) else {
            fatalError(
                """
                \(op): the size of tensor a \(a.shape) must match the size of tensor b \(b.shape) at non-singleton \
                dimensions
                """
            )
        }
        let n = shape.reduce(1, *)
        // Same layout, dense: one flat loop.
        if a.shape == b.shape && a.isDense && (a.strides == b.strides || a.isContiguous && b.isContiguous) {
            let out = Tensor(empty: shape, dtype: a.dtype, strides: stridesFollowing([a], shape: shape))
            let pa = a.pointer(T.self), pb = b.pointer(T.self), po = out.pointer(T.self)
            Parallel.forEachChunk(n) { r in
                for i in r { po[i] = f.apply(pa[i], pb[i]) }
            }
            return out
        }
        // One side is a single value.
        if b.count == 1 && a.shape == shape && a.isDense {
            let out = Tensor(empty: shape, dtype: a.dtype, strides: stridesFollowing([a], shape: shape))
            let pa = a.pointer(T.self), s = b.pointer(T.self)[0], po = out.pointer(T.self)
            Parallel.forEachChunk(n) { r in
                for i in r { po[i] = f.apply(pa[i], s) }
            }
            return out
        }
        if a.count == 1 && b.shape == shape && b.isDense {
            let out = Tensor(empty: shape, dtype: a.dtype, strides: stridesFollowing([b], shape: shape))
            let s = a.pointer(T.self)[0], pb = b.pointer(T.self), po = out.pointer(T.self)
            Parallel.forEachChunk(n) { r in
                for i in r { po[i] = f.apply(s, pb[i]) }
            }
            return out
        }
        let out = Tensor(empty: shape, dtype: a.dtype, strides: stridesFollowing([a, b], shape: shape))
        let plan = LoopPlan(
            shape: shape,
            operands: [
                (out.strides, 0), (a.broadcastStrides(to: shape), a.offset),
                (b.broadcastStrides(to: shape), b.offset)
            ])
        let o0 = out.storage.data.assumingMemoryBound(to: T.self)
        let a0 = a.storage.data.assumingMemoryBound(to: T.self)
        let b0 = b.storage.data.assumingMemoryBound(to: T.self)
        let so = plan.innerStride(0), sa = plan.innerStride(1), sb = plan.innerStride(2)
        Parallel.forEachChunk(n) { r in
            plan.run(r) { offs, len in
                let po = o0 + offs[0], pa = a0 + offs[1], pb = b0 + offs[2]
                if so == 1 && sa == 1 && sb == 1 {
                    for i in 0..<len { po[i] = f.apply(pa[i], pb[i]) }
                } else if so == 1 && sa == 1 && sb == 0 {
                    let s = pb[0]
                    for i in 0..<len { po[i] = f.apply(pa[i], s) }
                } else if so == 1 && sa == 0 && sb == 1 {
                    let s = pa[0]
                    for i in 0..<len { po[i] = f.apply(s, pb[i]) }
                } else {
                    for i in 0..<len { po[i * so] = f.apply(pa[i * sa], pb[i * sb]) }
                }
            }
        }
        return out
    }

    /// Broadcast comparison producing a `bool` tensor (no autograd).
    static func compare<P: ComparePredicate>(_ a: Tensor, _ b: Tensor, _ p: P, _ op: String) -> Tensor {
        require(
            a.dtype == b.dtype, "\(op): expected both operands to have the same dtype, got \(a.dtype) and \(b.dtype)")
        switch a.dtype {
        case .float32: return compareKernel(a, b, p, op, Float.self)
        case .float64: return compareKernel(a, b, p, op, Double.self)
        case .int64: return compareKernel(a, b, p, op, Int64.self)
        case .int32: return compareKernel(a, b, p, op, Int32.self)
        case .uint8: return compareKernel(a, b, p, op, UInt8.self)
        default: return compareKernel(a.to(.float32), b.to(.float32), p, op, Float.self)
        }
    }

    private static func compareKernel<T: TensorElement & Comparable, P: ComparePredicate>(
        _ a: Tensor, _ b: Tensor, _ p: P, _ op: String, _: T.Type
    ) -> Tensor {
        guard let shape = broadcastShapes(a.shape, b.shape) else {
            fatalError(
                """
                \(op): the size of tensor a \(a.shape) must match the size of tensor b \(b.shape) at non-singleton \
                dimensions
                """
            )
        }
        let out = Tensor(empty: shape, dtype: .bool, strides: stridesFollowing([a, b], shape: shape))
        let plan = LoopPlan(
            shape: shape,
            operands: [
                (out.strides, 0), (a.broadcastStrides(to: shape), a.offset),
                (b.broadcastStrides(to: shape), b.offset)
            ])
        let o0 = out.storage.data.assumingMemoryBound(to: Bool.self)
        let a0 = a.storage.data.assumingMemoryBound(to: T.self)
        let b0 = b.storage.data.assumingMemoryBound(to: T.self)
        let so = plan.innerStride(0), sa = plan.innerStride(1), sb = plan.innerStride(2)
        plan.run(0..<plan.count) { offs, len in
            let po = o0 + offs[0], pa = a0 + offs[1], pb = b0 + offs[2]
            for i in 0..<len { po[i * so] = p.test(pa[i * sa], pb[i * sb]) }
        }
        return out
    }
}

// MARK: - Maps used by ops and their backward rules

struct AddScalar: UnaryMap { let s: Double; func apply<T: FloatElement>(_ x: T) -> T { x + T(s) } }
struct MulScalar: UnaryMap { let s: Double; func apply<T: FloatElement>(_ x: T) -> T { x * T(s) } }
struct RSubScalar: UnaryMap { let s: Double; func apply<T: FloatElement>(_ x: T) -> T { T(s) - x } }
struct RDivScalar: UnaryMap { let s: Double; func apply<T: FloatElement>(_ x: T) -> T { T(s) / x } }
struct Negate: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { -x } }
struct Exp: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { T.exp(x) } }
struct Log: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { T.log(x) } }
struct Sqrt: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { x.squareRoot() } }
struct Abs: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { Swift.abs(x) } }
struct Sign: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { x > 0 ? 1 : (x < 0 ? -1 : 0) } }
struct Sin: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { T.sin(x) } }
struct Cos: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { T.cos(x) } }
struct Tanh: UnaryMap { func apply<T: FloatElement>(_ x: T) -> T { T.tanh(x) } }
struct Sigmoid: UnaryMap {
    func apply<T: FloatElement>(_ x: T) -> T {
        x >= 0
            ? 1 / (1 + T.exp(-x))
            : {
                let e = T.exp(x); return e / (1 + e)
            }()
    }
}
struct PowScalar: UnaryMap {
    let p: Double
    func apply<T: FloatElement>(_ x: T) -> T {
        p == 2 ? x * x : (p == 1 ? x : (p == 0.5 ? x.squareRoot() : T.pow(x, T(p))))
    }
}
struct LeakyRelu: UnaryMap {
    let slope: Double
    func apply<T: FloatElement>(_ x: T) -> T { x > 0 ? x : x * T(slope) }
}
/// fastai/miniai `GeneralRelu`: leaky ReLU, minus `sub`, capped at `maxv`.
struct GeneralReluMap: UnaryMap {
    let leak: Double, sub: Double, maxv: Double
    func apply<T: FloatElement>(_ x: T) -> T {
        let y = (x > 0 ? x : x * T(leak)) - T(sub)
        return y > T(maxv) ? T(maxv) : y
    }
}
struct Clamp: UnaryMap {
    let lo: Double, hi: Double
    func apply<T: FloatElement>(_ x: T) -> T {
        x < T(lo) ? T(lo) : (x > T(hi) ? T(hi) : x)
    }
}

struct Add: BinaryMap { func apply<T: FloatElement>(_ a: T, _ b: T) -> T { a + b } }
struct Sub: BinaryMap { func apply<T: FloatElement>(_ a: T, _ b: T) -> T { a - b } }
struct Mul: BinaryMap { func apply<T: FloatElement>(_ a: T, _ b: T) -> T { a * b } }
struct Div: BinaryMap { func apply<T: FloatElement>(_ a: T, _ b: T) -> T { a / b } }
struct PowMap: BinaryMap { func apply<T: FloatElement>(_ a: T, _ b: T) -> T { T.pow(a, b) } }

/// Backward maps: first operand is the saved forward value, second the upstream gradient.
struct SigmoidGrad: BinaryMap { func apply<T: FloatElement>(_ y: T, _ g: T) -> T { g * y * (1 - y) } }
struct TanhGrad: BinaryMap { func apply<T: FloatElement>(_ y: T, _ g: T) -> T { g * (1 - y * y) } }
struct ReluGrad: BinaryMap { func apply<T: FloatElement>(_ x: T, _ g: T) -> T { x > 0 ? g : 0 } }
struct LeakyReluGrad: BinaryMap {
    let slope: Double
    func apply<T: FloatElement>(_ x: T, _ g: T) -> T { x > 0 ? g : g * T(slope) }
}
struct GeneralReluGrad: BinaryMap {
    let leak: Double, sub: Double, maxv: Double
    func apply<T: FloatElement>(_ x: T, _ g: T) -> T {
        let y = (x > 0 ? x : x * T(leak)) - T(sub)
        if y > T(maxv) { return 0 }
        return x > 0 ? g : g * T(leak)
    }
}
struct ClampGrad: BinaryMap {
    let lo: Double, hi: Double
    func apply<T: FloatElement>(_ x: T, _ g: T) -> T { x >= T(lo) && x <= T(hi) ? g : 0 }
}
struct PowScalarGrad: BinaryMap {
    let p: Double
    func apply<T: FloatElement>(_ x: T, _ g: T) -> T {
        p == 2 ? g * 2 * x : g * T(p) * T.pow(x, T(p - 1))
    }
}
struct AbsGrad: BinaryMap {
    func apply<T: FloatElement>(_ x: T, _ g: T) -> T { x > 0 ? g : (x < 0 ? -g : 0) }
}
/// `x · log y` with `0 · log 0 = 0` (the exponent's gradient of `a ** b` is `a^b · log a`).
struct XLogY: BinaryMap {
    func apply<T: FloatElement>(_ x: T, _ y: T) -> T { x == 0 ? 0 : x * T.log(y) }
}

struct Equal: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a == b } }
struct NotEqual: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a != b } }
struct Less: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a < b } }
struct LessEqual: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a <= b } }
struct Greater: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a > b } }
struct GreaterEqual: ComparePredicate { func test<T: TensorElement & Comparable>(_ a: T, _ b: T) -> Bool { a >= b } }
