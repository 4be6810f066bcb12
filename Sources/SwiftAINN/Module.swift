import SwiftAICore

/// A trainable tensor with stable identity (optimizers and hooks key their state on it).
public final class Parameter {
    /// The current values; a leaf that records gradients while ``requiresGrad`` is true.
    public var value: Tensor

    /// A parameter holding `value`.
    public init(_ value: Tensor, requiresGrad: Bool = true) {
        self.value = value.requiringGrad(requiresGrad)
    }

    /// Whether backward computes a gradient for this parameter (false = frozen).
    public var requiresGrad: Bool {
        get { value.requiresGrad }
        set { if newValue != value.requiresGrad { value = value.requiringGrad(newValue) } }
    }

    /// The accumulated gradient, if any.
    public var grad: Tensor? {
        get { value.grad }
        set { value.grad = newValue }
    }

    /// Replaces the values in place (keeps gradient identity), like PyTorch's `p.data = t`.
    public func setData(_ t: Tensor) {
        require(t.shape == value.shape, "Parameter.setData: shape \(t.shape) does not match \(value.shape)")
        value.setData(t.detached().to(value.dtype))
    }

    public var shape: [Int] { value.shape }
}

/// A non-trainable tensor that belongs to a module's state (e.g. BatchNorm running statistics).
public final class Buffer {
    public var value: Tensor
    /// Whether it is part of ``Module/stateDict()``.
    public let persistent: Bool

    public init(_ value: Tensor, persistent: Bool = true) {
        self.value = value
        self.persistent = persistent
    }
}

/// Removes a hook when `remove()` is called.
public final class HookHandle {
    private weak var module: Module?
    private let id: Int

    init(module: Module, id: Int) {
        self.module = module
        self.id = id
    }

    /// Unregisters the hook (safe to call twice).
    public func remove() { module?.removeHook(id) }
}

/// Base class of layers and models, like PyTorch's `nn.Module`.
///
/// Subclasses store their ``Parameter``s, ``Buffer``s and child modules as properties (single, optional, or
/// arrays) and override ``forward(_:)``. Properties are found by reflection and named as PyTorch names them
/// in a `state_dict`: camelCase becomes snake_case (`runningMean` → `running_mean`), arrays add an index
/// (`layers.0`), and ``Sequential`` children are `0`, `1`, …. Properties whose names start with `_` are private.
open class Module {
    /// Training mode (BatchNorm uses batch statistics, Dropout is active) or evaluation mode.
    public private(set) var training = true
    private var hooks: [(id: Int, fn: (Module, Tensor, Tensor) -> Tensor?)] = []
    private var nextHookID = 0
    /// The module standing in for this one (``replaceModules(_:)``).
    private var _replacement: Module?

    public init() {}

    /// The computation of this module. Subclasses override it; call the module (`m(x)`) to run hooks too.
    open func forward(_ x: Tensor) -> Tensor {
        fatalError("\(type(of: self)) must override forward(_:)")
    }

    /// Runs ``forward(_:)`` (or calls the module replacing this one, ``replaceModules(_:)``) and then the forward
    /// hooks.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = _replacement.map { $0(x) } ?? forward(x)
        for h in hooks { if let replaced = h.fn(self, x, y) { y = replaced } }
        return y
    }

    // MARK: Reflection

    /// Direct children with their names.
    open var namedChildren: [(String, Module)] {
        reflectedMembers().compactMap { name, value in (value as? Module).map { (name, $0) } }
    }

    /// Parameters and buffers stored directly on this module (not its children), with their names.
    private var ownTensors: [(String, AnyObject)] {
        reflectedMembers().compactMap { name, value in
            if let p = value as? Parameter { return (name, p) }
            if let b = value as? Buffer { return (name, b) }
            return nil
        }
    }

    /// Every stored property holding a module, parameter or buffer (unwrapping optionals and arrays).
    private func reflectedMembers() -> [(String, AnyObject)] {
        var out: [(String, AnyObject)] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        var levels: [Mirror] = []
        while let m = mirror {
            levels.append(m)
            mirror = m.superclassMirror
        }
        for m in levels.reversed() {
            for child in m.children {
                guard let label = child.label, !label.hasPrefix("_"), !label.hasPrefix("$") else { continue }
                let name = Module.snakeCase(label)
                collect(child.value, name, into: &out)
            }
        }
        return out
    }

    private func collect(_ value: Any, _ name: String, into out: inout [(String, AnyObject)]) {
        switch value {
        case let m as Module: out.append((name, m))
        case let p as Parameter: out.append((name, p))
        case let b as Buffer: out.append((name, b))
        case let arr as [Module]: for (i, m) in arr.enumerated() { out.append(("\(name).\(i)", m)) }
        default:
            let mirror = Mirror(reflecting: value)
            if mirror.displayStyle == .optional, let inner = mirror.children.first?.value {
                collect(inner, name, into: &out)
            }
        }
    }

    /// `runningMean` → `running_mean`.
    static func snakeCase(_ s: String) -> String {
        var out = ""
        var prev: Character? = nil
        for ch in s {
            if ch.isUppercase, let p = prev, p.isLowercase || p.isNumber {
                out.append("_")
            }
            out.append(contentsOf: ch.lowercased())
            prev = ch
        }
        return out
    }

    /// This module and all descendants with dotted names (`""` for self), depth first. A replaced module
    /// (``replaceModules(_:)``) is listed as its replacement, under its own name.
    public func namedModules(prefix: String = "") -> [(String, Module)] {
        var out: [(String, Module)] = []
        walk(prefix) { name, m, _ in out.append((name, m)) }
        return out
    }

    /// Calls `visit(name, module, replaced)` for this module and each descendant, depth first, each once: `module`
    /// is the one in the tree, `replaced` the module it stands in for (``replaceModules(_:)``), if any.
    private func walk(_ prefix: String, _ visit: (String, Module, Module?) -> Void) {
        var seen: Set<ObjectIdentifier> = []
        func go(_ stored: Module, _ name: String) {
            let m = stored._replacement ?? stored
            guard seen.insert(ObjectIdentifier(m)).inserted else { return }
            visit(name, m, m === stored ? nil : stored)
            for (child, c) in m.namedChildren { go(c, name.isEmpty ? child : name + "." + child) }
        }
        go(self, prefix)
    }

    /// This module and all descendants.
    public func modules() -> [Module] { namedModules().map(\.1) }

    /// All parameters with PyTorch-style dotted names; a parameter shared by two modules appears once.
    public func namedParameters() -> [(String, Parameter)] {
        var seen = Set<ObjectIdentifier>()
        var out: [(String, Parameter)] = []
        for (pre, m) in namedModules() {
            for (name, obj) in m.ownTensors {
                guard let p = obj as? Parameter, seen.insert(ObjectIdentifier(p)).inserted else { continue }
                out.append((pre.isEmpty ? name : pre + "." + name, p))
            }
        }
        return out
    }

    /// All parameters.
    public func parameters() -> [Parameter] { namedParameters().map(\.1) }

    /// All buffers with dotted names.
    public func namedBuffers() -> [(String, Buffer)] {
        var out: [(String, Buffer)] = []
        for (pre, m) in namedModules() {
            for (name, obj) in m.ownTensors {
                if let b = obj as? Buffer { out.append((pre.isEmpty ? name : pre + "." + name, b)) }
            }
        }
        return out
    }

    // MARK: Modes and traversal

    /// Sets training mode on this module and all descendants (and on the modules they replace).
    public func train(_ on: Bool = true) {
        walk("") { _, m, replaced in
            m.training = on
            replaced?.training = on
        }
    }

    /// Evaluation mode (``train(_:)`` with `false`).
    public func eval() { train(false) }

    /// Calls `fn` on every descendant and then on this module (PyTorch's `apply`, used for initialisation).
    public func apply(_ fn: (Module) -> Void) {
        for m in modules().reversed() { fn(m) }
    }

    /// Sets ``Parameter/requiresGrad`` on every parameter (`false` freezes the module).
    public func requiresGrad(_ on: Bool) {
        for p in parameters() { p.requiresGrad = on }
    }

    /// Converts floating-point parameters and buffers to `dtype` (PyTorch's `model.double()` / `.float()`).
    public func to(_ dtype: DType) {
        require(dtype.isFloatingPoint, "Module.to: \(dtype) is not a floating-point type")
        for p in parameters() where p.value.dtype.isFloatingPoint {
            p.value = p.value.detached().to(dtype).requiringGrad(p.requiresGrad)
        }
        for (_, b) in namedBuffers() where b.value.dtype.isFloatingPoint { b.value = b.value.to(dtype) }
    }

    /// A copy of this model for inference only: convolutions with their BatchNorm folded into the weights and their
    /// activation and residual add fused into the kernel (``FusedConv2d``), Dropout removed. Its outputs equal this
    /// model's in evaluation mode; it has no parameters (a snapshot: fuse again after the weights change) and shares
    /// the layers it cannot fuse (pooling, linear heads) with this model, so keep this model in evaluation mode
    /// while using it. Modules that know no fusion return themselves.
    open func fusedForInference() -> Module { self }

    /// Number of elements in all parameters.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.value.count } }

    // MARK: Replacing modules

    /// Puts `replacement(m)` in place of each module `m` of this tree for which it returns a module (this one
    /// included): PyTorch's `setattr(parent, name, new)` swaps, wherever `m` is stored, in built-in and user-written
    /// modules alike. Calling `m` (`m(x)`) runs the new module and then `m`'s hooks; ``modules()``, the parameters,
    /// ``stateDict()`` and ``train(_:)`` see the new module under `m`'s name. `m`'s own properties do not change (a
    /// replacement that shares `m`'s ``Parameter``s keeps optimizers, names and saved weights). Returning the module
    /// that `m` replaces puts it back. Replacements are not searched further. Returns the (replaced, new) pairs.
    @discardableResult
    public func replaceModules(_ replacement: (Module) -> Module?) -> [(Module, Module)] {
        var done: [(Module, Module)] = [], seen: Set<ObjectIdentifier> = []
        func go(_ stored: Module) {
            guard seen.insert(ObjectIdentifier(stored)).inserted else { return }
            let m = stored._replacement ?? stored
            guard let new = replacement(m), new !== m else { return m.namedChildren.forEach { go($0.1) } }
            new.train(m.training)
            stored._replacement = new === stored ? nil : new
            done.append((m, new))
        }
        go(self)
        return done
    }

    // MARK: Hooks

    /// Calls `hook(module, input, output)` after every forward of this module until the handle is removed.
    @discardableResult
    public func registerForwardHook(_ hook: @escaping (Module, Tensor, Tensor) -> Void) -> HookHandle {
        nextHookID += 1
        hooks.append(
            (
                nextHookID,
                { m, x, y in
                    hook(m, x, y); return nil
                }
            ))
        return HookHandle(module: self, id: nextHookID)
    }

    /// Like ``registerForwardHook(_:)``, but the hook's result replaces the module's output (PyTorch's forward
    /// hooks returning a value), e.g. to simulate quantization while training.
    @discardableResult
    public func registerOutputHook(_ hook: @escaping (Module, Tensor, Tensor) -> Tensor) -> HookHandle {
        nextHookID += 1
        hooks.append((nextHookID, hook))
        return HookHandle(module: self, id: nextHookID)
    }

    func removeHook(_ id: Int) { hooks.removeAll { $0.id == id } }

    /// Number of forward hooks currently registered.
    public var forwardHookCount: Int { hooks.count }
}
