/// One vertex of the autograd graph.
///
/// A leaf node belongs to a tensor the user marked with `requiresGrad` and accumulates `grad`.
/// An interior node is created by an op when gradients are tracked: it remembers the input nodes and
/// a closure mapping the output's gradient to each input's gradient. The closure captures the tensors
/// it needs *without* their nodes, so the graph holds no cycles and is freed after `backward()`.
public final class GradNode {
    /// Name of the op that produced the tensor (`"leaf"` for leaves).
    public let op: String
    var inputs: [GradNode?]
    var backwardFn: ((Tensor) -> [Tensor?])?
    /// Accumulated gradient of a leaf (or of an interior node that retains it).
    public internal(set) var grad: Tensor?
    var pending: Tensor?
    var retainsGrad = false
    let isLeaf: Bool

    init(leaf: ()) {
        op = "leaf"
        inputs = []
        isLeaf = true
    }

    init(op: String, inputs: [GradNode?], backward: @escaping (Tensor) -> [Tensor?]) {
        self.op = op
        self.inputs = inputs
        self.backwardFn = backward
        isLeaf = false
    }

    func accumulate(into slot: inout Tensor?, _ g: Tensor) {
        slot = slot.map { $0 + g } ?? g
    }
}

/// Whether ops record the graph. Scoped with ``noGrad(_:)`` / ``withGrad(_:)``; thread- and task-local.
public enum GradMode {
    @TaskLocal public static var isEnabled = true
}

/// Observers of ``Tensor/backward(_:retainGraph:)``, scoped to a task (``current``): `afterAccumulate` runs as soon
/// as a leaf's gradient for this backward is complete (PyTorch's post-accumulate-grad hooks), with the leaf's
/// ``Tensor/gradKey``. Data-parallel training starts a bucket's all-reduce from it while the rest of backward runs.
public final class GradHooks: Sendable {
    @TaskLocal public static var current: GradHooks?
    public let afterAccumulate: @Sendable (ObjectIdentifier) -> Void

    public init(afterAccumulate: @escaping @Sendable (ObjectIdentifier) -> Void) {
        self.afterAccumulate = afterAccumulate
    }
}

/// Runs `body` without recording gradients (PyTorch's `torch.no_grad()`).
@inlinable
public func noGrad<R>(_ body: () throws -> R) rethrows -> R {
    try GradMode.$isEnabled.withValue(false) { try body() }
}

/// Runs `body` with gradient recording enabled, even inside ``noGrad(_:)``.
@inlinable
public func withGrad<R>(_ body: () throws -> R) rethrows -> R {
    try GradMode.$isEnabled.withValue(true) { try body() }
}

extension Tensor {
    /// Whether gradients flow to or through this tensor. Setting it on a tensor makes it a leaf.
    public var requiresGrad: Bool {
        get { node != nil }
        set {
            if newValue {
                require(
                    dtype.isFloatingPoint,
                    "requiresGrad: only floating-point tensors can require gradients, got \(dtype)")
                if node == nil { node = GradNode(leaf: ()) }
            } else {
                node = nil
            }
        }
    }

    /// Returns a copy of this value with ``requiresGrad`` set.
    public func requiringGrad(_ flag: Bool = true) -> Tensor {
        var t = self
        t.node = nil
        t.requiresGrad = flag
        return t
    }

    /// Whether this tensor was created by the user rather than an op.
    public var isLeaf: Bool { node?.isLeaf ?? true }

    /// The accumulated gradient (leaves, and tensors that called ``retainGrad()``).
    public var grad: Tensor? {
        get { node?.grad }
        nonmutating set { node?.grad = newValue }
    }

    /// Keeps this interior tensor's gradient after backward (PyTorch's `retain_grad()`).
    public func retainGrad() { node?.retainsGrad = true }

    /// Identifies this tensor's autograd leaf (``GradHooks/afterAccumulate`` reports it); `nil` without one.
    public var gradKey: ObjectIdentifier? { node.map { ObjectIdentifier($0) } }

    /// The op that produced this tensor, if recorded.
    public var gradFunction: String? { node.map { $0.isLeaf ? "leaf" : $0.op } }

    /// Replaces the values (storage, shape and strides) while keeping this tensor's autograd identity —
    /// PyTorch's `param.data = t`. Optimizers and initialisers update parameters this way.
    public mutating func setData(_ t: Tensor) {
        require(t.dtype == dtype, "setData: dtype \(t.dtype) does not match \(dtype)")
        storage = t.storage
        shape = t.shape
        strides = t.strides
        offset = t.offset
    }

    /// The same values, cut from the graph.
    public func detached() -> Tensor {
        var t = self
        t.node = nil
        return t
    }

    /// Whether an op with these inputs should record a node.
    @inline(__always)
    static func needsGrad(_ inputs: Tensor...) -> Bool {
        inputs.contains { $0.node != nil } && GradMode.isEnabled
    }

    /// Attaches a backward rule mapping the gradient of `self` to the gradient of each of `inputs`.
    /// Call only when ``needsGrad(_:)`` holds; the closure must not capture tensors with nodes.
    @inline(__always)
    mutating func recordGrad(_ op: String, _ inputs: [Tensor], _ backward: @escaping (Tensor) -> [Tensor?]) {
        node = GradNode(op: op, inputs: inputs.map(\.node), backward: backward)
    }

    /// Back-propagates from this tensor through the graph, accumulating into leaves' ``grad``.
    ///
    /// - Parameters:
    ///   - gradient: the upstream gradient, shaped like `self`; may be omitted for a one-element tensor.
    ///   - retainGraph: keep the graph so backward can run again through it.
    public func backward(_ gradient: Tensor? = nil, retainGraph: Bool = false) {
        guard let root = node else {
            fatalError("backward(): tensor does not require grad and has no grad function")
        }
        let seed: Tensor
        if let gradient {
            require(
                gradient.shape == shape,
                "backward(): gradient shape \(gradient.shape) does not match tensor shape \(shape)")
            seed = gradient.detached().to(dtype)
        } else {
            require(
                count == 1, "backward(): grad can be implicitly created only for scalar outputs, got shape \(shape)")
            seed = Tensor.ones(shape, dtype: dtype)
        }
        // Topological order by iterative depth-first search (post-order, then reversed).
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while let (n, i) = stack.popLast() {
            if i < n.inputs.count {
                stack.append((n, i + 1))
                if let child = n.inputs[i], visited.insert(ObjectIdentifier(child)).inserted {
                    stack.append((child, 0))
                }
            } else {
                order.append(n)
            }
        }
        let hook = GradHooks.current?.afterAccumulate
        noGrad {
            root.pending = seed
            for n in order.reversed() {
                guard let g = n.pending else { continue }
                n.pending = nil
                if n.isLeaf || n.retainsGrad { n.accumulate(into: &n.grad, g) }
                if n.isLeaf, let hook { hook(ObjectIdentifier(n)) }
                guard let fn = n.backwardFn else { continue }
                let grads = fn(g)
                for (input, gi) in zip(n.inputs, grads) {
                    guard let input, let gi else { continue }
                    input.accumulate(into: &input.pending, gi)
                }
            }
        }
        if !retainGraph {
            for n in order where !n.isLeaf {
                n.backwardFn = nil
                n.inputs = []
            }
        }
    }
}
