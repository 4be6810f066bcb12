import Foundation
import SwiftAICore

/// Why a state dict does not fit a model. Every problem is listed; the model is left unchanged.
public struct StateDictError: Error, CustomStringConvertible, Equatable {
    public var missing: [String] = []
    public var unexpected: [String] = []
    /// Keys whose shape or dtype differs: (key, model's, file's).
    public var mismatched: [String] = []

    public var isEmpty: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    public var description: String {
        var parts: [String] = []
        if !missing.isEmpty { parts.append("missing keys: \(missing.joined(separator: ", "))") }
        if !unexpected.isEmpty { parts.append("unexpected keys: \(unexpected.joined(separator: ", "))") }
        if !mismatched.isEmpty { parts.append("size mismatch: \(mismatched.joined(separator: "; "))") }
        return "error(s) loading state dict: " + parts.joined(separator: ". ")
            + """
            . The weights were saved from a different architecture; build the same model, or load with strict: false \
            to skip missing/unexpected keys.
            """
    }
}

extension Module {
    /// Parameters and persistent buffers by PyTorch-style name.
    public func stateDict() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, p) in namedParameters() { out[k] = p.value.detached() }
        for (k, b) in namedBuffers() where b.persistent { out[k] = b.value }
        return out
    }

    /// Copies values from `state` into this model's parameters and buffers.
    ///
    /// With `strict` (the default) every key must match; otherwise missing and unexpected keys are skipped.
    /// Shapes must always agree. Floating-point values are converted to the parameter's dtype. Throws
    /// ``StateDictError`` listing every problem, and then changes nothing.
    public func load(stateDict state: [String: Tensor], strict: Bool = true) throws {
        var targets: [String: (Tensor) -> Void] = [:]
        var current: [String: Tensor] = [:]
        for (k, p) in namedParameters() {
            current[k] = p.value
            targets[k] = { p.setData($0) }
        }
        for (k, b) in namedBuffers() where b.persistent {
            current[k] = b.value
            targets[k] = { b.value = $0.to(b.value.dtype).contiguous() }
        }
        var err = StateDictError()
        if strict {
            err.missing = current.keys.filter { state[$0] == nil }.sorted()
            err.unexpected = state.keys.filter { current[$0] == nil }.sorted()
        }
        for (k, t) in state.sorted(by: { $0.key < $1.key }) {
            guard let mine = current[k] else { continue }
            if t.shape != mine.shape {
                err.mismatched.append("\(k): model \(mine.shape), given \(t.shape)")
            } else if t.dtype != mine.dtype && !(t.dtype.isFloatingPoint && mine.dtype.isFloatingPoint)
                && !(!t.dtype.isFloatingPoint && !mine.dtype.isFloatingPoint)
            {
                err.mismatched.append("\(k): model \(mine.dtype), given \(t.dtype)")
            }
        }
        guard err.isEmpty else { throw err }
        for (k, t) in state { targets[k]?(t.detached()) }
    }

    /// Saves ``stateDict()`` as safetensors (atomically: a temporary file, then a rename).
    public func save(to path: String, metadata: [String: String] = [:]) throws {
        try Safetensors.write(stateDict(), metadata: metadata, to: path)
    }

    /// Loads weights saved by ``save(to:metadata:)`` or by PyTorch (`safetensors.torch.save_file(model.state_dict())`).
    /// On any error the model is unchanged.
    @discardableResult
    public func load(from path: String, strict: Bool = true) throws -> [String: String] {
        let (tensors, metadata) = try Safetensors.read(path: path)
        try load(stateDict: tensors, strict: strict)
        return metadata
    }
}
