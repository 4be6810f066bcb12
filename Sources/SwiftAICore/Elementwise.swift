// Elementwise ops with their backward rules.

extension Tensor {
    /// Unary op with autograd. `grad(x, y, g)` maps the saved input, output and upstream gradient to the
    /// input's gradient.
    func unary<F: UnaryMap>(
        _ op: String, _ f: F, saveInput: Bool = false, saveOutput: Bool = false,
        grad: @escaping (Tensor, Tensor, Tensor) -> Tensor
    ) -> Tensor {
        var y = map(f, op)
        if Tensor.needsGrad(self) {
            let x = SavedActivation(saveInput ? self : Tensor.placeholder)
            let yy = SavedActivation(saveOutput ? y : Tensor.placeholder)
            y.recordGrad(op, [self]) { g in [grad(x.tensor, yy.tensor, g)] }
        }
        return y
    }

    /// Binary broadcast op with autograd. `grad(a, b, g)` returns each operand's gradient at the broadcast
    /// shape (reduced to the operand's shape here); `nil` where unused. Operands are kept for the backward
    /// pass only when `saveInputs` (addition and subtraction need none, and keeping them would hold two
    /// activations per residual block until backward).
    static func binary<F: BinaryMap>(
        _ op: String, _ a: Tensor, _ b: Tensor, _ f: F, saveInputs: Bool = true,
        grad: @escaping (Tensor, Tensor, Tensor, Bool, Bool) -> (Tensor?, Tensor?)
    ) -> Tensor {
        var y = zipMap(a, b, f, op)
        if needsGrad(a, b) {
            let ad = saveInputs ? a.detached() : placeholder, bd = saveInputs ? b.detached() : placeholder
            let aShape = a.shape, bShape = b.shape
            let needA = a.node != nil, needB = b.node != nil
            y.recordGrad(op, [a, b]) { g in
                let (ga, gb) = grad(ad, bd, g, needA, needB)
                return [needA ? ga?.sumToShape(aShape) : nil, needB ? gb?.sumToShape(bShape) : nil]
            }
        }
        return y
    }

    /// An empty stand-in for tensors a backward rule does not need.
    static let placeholder = Tensor(
        storage: Storage(byteCount: 64), shape: [0], strides: [1], offset: 0, dtype: .float32)

    // MARK: Arithmetic

    public static func + (a: Tensor, b: Tensor) -> Tensor {
        binary("add", a, b, Add(), saveInputs: false) { _, _, g, _, _ in (g, g) }
    }

    public static func - (a: Tensor, b: Tensor) -> Tensor {
        binary("sub", a, b, Sub(), saveInputs: false) { _, _, g, _, nb in (g, nb ? -g : nil) }
    }

    public static func * (a: Tensor, b: Tensor) -> Tensor {
        binary("mul", a, b, Mul()) { a, b, g, na, nb in (na ? g * b : nil, nb ? g * a : nil) }
    }

    public static func / (a: Tensor, b: Tensor) -> Tensor {
        binary("div", a, b, Div()) { a, b, g, na, nb in
            (na ? g / b : nil, nb ? -(g * a) / (b * b) : nil)
        }
    }

    public static func + (a: Tensor, s: Double) -> Tensor { a.unary("add", AddScalar(s: s)) { _, _, g in g } }
    public static func + (s: Double, a: Tensor) -> Tensor { a + s }
    public static func - (a: Tensor, s: Double) -> Tensor { a + (-s) }
    public static func - (s: Double, a: Tensor) -> Tensor { a.unary("rsub", RSubScalar(s: s)) { _, _, g in -g } }
    public static func * (a: Tensor, s: Double) -> Tensor { a.unary("mul", MulScalar(s: s)) { _, _, g in g * s } }
    public static func * (s: Double, a: Tensor) -> Tensor { a * s }
    public static func / (a: Tensor, s: Double) -> Tensor { a * (1 / s) }
    public static func / (s: Double, a: Tensor) -> Tensor {
        a.unary("rdiv", RDivScalar(s: s), saveInput: true) { x, _, g in -(g * s) / (x * x) }
    }

    public static prefix func - (a: Tensor) -> Tensor { a.unary("neg", Negate()) { _, _, g in -g } }

    public static func += (a: inout Tensor, b: Tensor) { a = a + b }
    public static func -= (a: inout Tensor, b: Tensor) { a = a - b }
    public static func *= (a: inout Tensor, b: Tensor) { a = a * b }
    public static func /= (a: inout Tensor, b: Tensor) { a = a / b }
    public static func += (a: inout Tensor, s: Double) { a = a + s }
    public static func -= (a: inout Tensor, s: Double) { a = a - s }
    public static func *= (a: inout Tensor, s: Double) { a = a * s }
    public static func /= (a: inout Tensor, s: Double) { a = a / s }

    // MARK: Math

    /// eˣ.
    public func exp() -> Tensor { unary("exp", Exp(), saveOutput: true) { _, y, g in g * y } }
    /// Natural logarithm.
    public func log() -> Tensor { unary("log", Log(), saveInput: true) { x, _, g in g / x } }
    /// Square root.
    public func sqrt() -> Tensor { unary("sqrt", Sqrt(), saveOutput: true) { _, y, g in g * 0.5 / y } }
    /// Sine.
    public func sin() -> Tensor { unary("sin", Sin(), saveInput: true) { x, _, g in g * x.map(Cos(), "cos") } }
    /// Cosine.
    public func cos() -> Tensor { unary("cos", Cos(), saveInput: true) { x, _, g in -(g * x.map(Sin(), "sin")) } }
    /// Absolute value (gradient 0 at 0, as PyTorch).
    public func abs() -> Tensor {
        unary("abs", Abs(), saveInput: true) { x, _, g in Tensor.zipMap(x, g, AbsGrad(), "abs_backward") }
    }
    /// `self ** p`.
    public func pow(_ p: Double) -> Tensor {
        unary("pow", PowScalar(p: p), saveInput: true) { x, _, g in
            Tensor.zipMap(x, g, PowScalarGrad(p: p), "pow_backward")
        }
    }
    /// `self ** exponent`, broadcast.
    public func pow(_ exponent: Tensor) -> Tensor {
        Tensor.binary("pow", self, exponent, PowMap()) { a, b, g, na, nb in
            let y = Tensor.zipMap(a, b, PowMap(), "pow")
            return (
                na ? g * b * Tensor.zipMap(a, b - 1, PowMap(), "pow") : nil,
                nb ? g * Tensor.zipMap(y, a, XLogY(), "pow_backward") : nil
            )
        }
    }
    /// Elementwise square.
    public func squared() -> Tensor { pow(2) }
    /// −1, 0 or 1 (not differentiable).
    public func sign() -> Tensor { map(Sign(), "sign") }
    /// Values limited to `[min, max]`; gradient passes where `min ≤ x ≤ max`.
    public func clamp(min lo: Double = -.infinity, max hi: Double = .infinity) -> Tensor {
        unary("clamp", Clamp(lo: lo, hi: hi), saveInput: true) { x, _, g in
            Tensor.zipMap(x, g, ClampGrad(lo: lo, hi: hi), "clamp_backward")
        }
    }

    // MARK: Activations

    /// Logistic sigmoid.
    public func sigmoid() -> Tensor {
        unary("sigmoid", Sigmoid(), saveOutput: true) { _, y, g in
            Tensor.zipMap(y, g, SigmoidGrad(), "sigmoid_backward")
        }
    }
    /// Hyperbolic tangent.
    public func tanh() -> Tensor {
        unary("tanh", Tanh(), saveOutput: true) { _, y, g in Tensor.zipMap(y, g, TanhGrad(), "tanh_backward") }
    }
    /// Swift.max(x, 0).
    public func relu() -> Tensor {
        unary("relu", LeakyRelu(slope: 0), saveInput: true) { x, _, g in
            Tensor.zipMap(x, g, ReluGrad(), "relu_backward")
        }
    }
    /// x for x > 0, else `slope`·x.
    public func leakyRelu(_ slope: Double = 0.01) -> Tensor {
        unary("leaky_relu", LeakyRelu(slope: slope), saveInput: true) { x, _, g in
            Tensor.zipMap(x, g, LeakyReluGrad(slope: slope), "leaky_relu_backward")
        }
    }
    /// The lesson's GeneralRelu in one pass: `Swift.min(leakyRelu(x, leak) − sub, maxv)`.
    public func generalRelu(leak: Double = 0, sub: Double = 0, maxv: Double = .infinity) -> Tensor {
        unary("general_relu", GeneralReluMap(leak: leak, sub: sub, maxv: maxv), saveInput: true) { x, _, g in
            Tensor.zipMap(x, g, GeneralReluGrad(leak: leak, sub: sub, maxv: maxv), "general_relu_backward")
        }
    }

    // MARK: Comparisons (not differentiable; `bool` results)

    public static func .== (a: Tensor, b: Tensor) -> Tensor { compare(a, b, Equal(), "eq") }
    public static func .!= (a: Tensor, b: Tensor) -> Tensor { compare(a, b, NotEqual(), "ne") }
    public static func .< (a: Tensor, b: Tensor) -> Tensor { compare(a, b, Less(), "lt") }
    public static func .<= (a: Tensor, b: Tensor) -> Tensor { compare(a, b, LessEqual(), "le") }
    public static func .> (a: Tensor, b: Tensor) -> Tensor { compare(a, b, Greater(), "gt") }
    public static func .>= (a: Tensor, b: Tensor) -> Tensor { compare(a, b, GreaterEqual(), "ge") }
    public static func .== (a: Tensor, s: Double) -> Tensor { a .== Tensor.full([], s, dtype: a.dtype) }
    public static func .!= (a: Tensor, s: Double) -> Tensor { a .!= Tensor.full([], s, dtype: a.dtype) }
    public static func .< (a: Tensor, s: Double) -> Tensor { a .< Tensor.full([], s, dtype: a.dtype) }
    public static func .<= (a: Tensor, s: Double) -> Tensor { a .<= Tensor.full([], s, dtype: a.dtype) }
    public static func .> (a: Tensor, s: Double) -> Tensor { a .> Tensor.full([], s, dtype: a.dtype) }
    public static func .>= (a: Tensor, s: Double) -> Tensor { a .>= Tensor.full([], s, dtype: a.dtype) }

    /// Picks `a` where `condition` is true, else `b` (all broadcast). Gradients flow to the chosen side.
    public static func `where`(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        let mask = condition.dtype == a.dtype ? (condition .!= 0) : condition.to(.bool)
        let m = mask.to(a.dtype)
        // a·m + b·(1−m) would turn inf·0 into NaN; select instead.
        var y = Tensor.zipMap(
            Tensor.zipMap(a, m, SelectIfNonzero(), "where"), Tensor.zipMap(b, m, SelectIfZero(), "where"),
            Add(), "where")
        if needsGrad(a, b) {
            let ashape = a.shape, bshape = b.shape, needA = a.node != nil, needB = b.node != nil
            y.recordGrad("where", [a, b]) { g in
                [
                    needA ? Tensor.zipMap(g, m, SelectIfNonzero(), "where_backward").sumToShape(ashape) : nil,
                    needB ? Tensor.zipMap(g, m, SelectIfZero(), "where_backward").sumToShape(bshape) : nil
                ]
            }
        }
        return y
    }
}

/// `a` where `m ≠ 0`, else 0.
struct SelectIfNonzero: BinaryMap { func apply<T: FloatElement>(_ a: T, _ m: T) -> T { m != 0 ? a : 0 } }
/// `a` where `m = 0`, else 0.
struct SelectIfZero: BinaryMap { func apply<T: FloatElement>(_ a: T, _ m: T) -> T { m == 0 ? a : 0 } }
