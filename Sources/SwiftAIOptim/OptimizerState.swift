import Foundation
import SwiftAICore
import SwiftAINN

/// One parameter's optimizer state (momentum buffers, moving averages, a step count).
///
/// Its saved form is an entry of PyTorch's `state_dict()["state"]`: tensors under PyTorch's names, and the step
/// (an integer here, a float tensor in PyTorch).
public protocol OptimizerState {
    /// The state before the parameter's first update.
    init()
    /// Rebuilds a state from its saved form, taking out the entries it uses (loading refuses any left over).
    init(from saved: inout SavedOptimizerState) throws
    /// The saved form.
    var saved: SavedOptimizerState { get }
}

/// An ``OptimizerState`` in saved form: tensors by PyTorch's names (`exp_avg`, `momentum_buffer`, …) and the step.
public struct SavedOptimizerState {
    public var tensors: [String: Tensor]
    public var step: Int?
    /// The parameter's index, for error messages.
    var index = 0

    public init(tensors: [String: Tensor] = [:], step: Int? = nil) {
        self.tensors = tensors
        self.step = step
    }

    /// Removes and returns the tensor named `name`, if there is one.
    public mutating func take(_ name: String) -> Tensor? { tensors.removeValue(forKey: name) }

    /// Removes and returns the tensor named `name`; throws ``OptimizerStateError/missingState(parameter:name:)``.
    public mutating func required(_ name: String) throws -> Tensor {
        guard let t = take(name) else { throw OptimizerStateError.missingState(parameter: index, name: name) }
        return t
    }

    /// Removes and returns the step; throws when it is absent or negative.
    public mutating func requiredStep() throws -> Int {
        guard let s = step else { throw OptimizerStateError.missingState(parameter: index, name: "step") }
        guard s >= 0 else { throw OptimizerStateError.invalidStep(parameter: index, step: s) }
        step = nil
        return s
    }
}

/// Why saved optimizer state does not fit an optimizer. Loading checks everything before changing anything.
public enum OptimizerStateError: Error, CustomStringConvertible, Equatable {
    /// The metadata is absent, not valid JSON for this format, or of another format version.
    case badMetadata(String)
    case wrongKind(expected: String, found: String)
    case groupCount(expected: Int, found: Int)
    case parameterCount(group: Int, expected: Int, found: Int)
    /// A group's `params` are not the indices that follow the previous group's.
    case parameterIndices(group: Int, expected: Range<Int>, found: [Int])
    case missingHyperParameter(group: Int, name: String)
    case invalidHyperParameter(group: Int, name: String, reason: String)
    /// A tensor or state entry this optimizer does not have (a name it does not know, or an index past its
    /// parameters).
    case unexpectedState(String)
    case missingState(parameter: Int, name: String)
    case invalidStep(parameter: Int, step: Int)
    case shape(tensor: String, expected: [Int], found: [Int])
    case dtype(tensor: String, expected: DType, found: DType)

    public var description: String {
        let what: String
        switch self {
        case let .badMetadata(why): what = why
        case let .wrongKind(expected, found): what = "it was saved by \(found), this optimizer is \(expected)"
        case let .groupCount(expected, found): what = "\(found) parameter groups, this optimizer has \(expected)"
        case let .parameterCount(group, expected, found):
            what = "group \(group) has \(found) parameters, this optimizer's has \(expected)"
        case let .parameterIndices(group, expected, found):
            what = "group \(group) lists parameters \(found), expected \(Array(expected))"
        case let .missingHyperParameter(group, name): what = "group \(group) has no '\(name)'"
        case let .invalidHyperParameter(group, name, reason): what = "group \(group)'s '\(name)': \(reason)"
        case let .unexpectedState(name): what = "unexpected state '\(name)'"
        case let .missingState(parameter, name): what = "parameter \(parameter)'s state has no '\(name)'"
        case let .invalidStep(parameter, step): what = "parameter \(parameter)'s step is \(step)"
        case let .shape(tensor, expected, found): what = "'\(tensor)' has shape \(found), its parameter \(expected)"
        case let .dtype(tensor, expected, found): what = "'\(tensor)' is \(found), its parameter \(expected)"
        }
        return "cannot load optimizer state: \(what). The optimizer is unchanged."
    }
}

/// Everything in an optimizer's state but its tensors, in torch.optim's layout (JSON in a file's `__metadata__`).
public struct OptimizerMetadata: Codable, Equatable, Sendable {
    /// The `__metadata__` key under which safetensors files keep the JSON.
    public static let key = "swiftai.optimizer"
    static let currentVersion = 1

    /// The format's version (1).
    public var version = OptimizerMetadata.currentVersion
    /// ``Optimizer/kind``.
    public var kind: String
    /// ``Optimizer/stepCount``.
    public var stepCount: Int
    /// Per-parameter numbers by parameter index: PyTorch's `state` less its tensors.
    public var state: [Int: Entry]
    /// PyTorch's `param_groups`.
    public var paramGroups: [Group]
    /// Optimizer-specific numbers (``AutoAnnealAdam``'s `mark` and `last_average`).
    public var extra: [String: Double]

    /// One parameter's numbers.
    public struct Entry: Codable, Equatable, Sendable {
        public var step: Int

        public init(step: Int) { self.step = step }
    }

    /// One parameter group: its parameters' indices and hyper-parameters under PyTorch's names (those of the
    /// optimizer's kind; the others are nil), with SwiftAI's `lrMult`.
    public struct Group: Codable, Equatable, Sendable {
        public var params: [Int]
        public var lr: Double
        public var weightDecay: Double
        public var lrMult: Double
        public var momentum: Double?
        public var dampening: Double?
        public var nesterov: Bool?
        public var alpha: Double?
        public var betas: [Double]?
        public var eps: Double?
        public var decoupledWeightDecay: Bool?

        enum CodingKeys: String, CodingKey {
            case params, lr, lrMult, momentum, dampening, nesterov, alpha, betas, eps
            case weightDecay = "weight_decay", decoupledWeightDecay = "decoupled_weight_decay"
        }

        init(params: [Int], lr: Double, weightDecay: Double, lrMult: Double) {
            (self.params, self.lr, self.weightDecay, self.lrMult) = (params, lr, weightDecay, lrMult)
        }

        func required<T>(_ key: KeyPath<Group, T?>, _ name: String, group: Int) throws -> T {
            guard let v = self[keyPath: key] else {
                throw OptimizerStateError.missingHyperParameter(group: group, name: name)
            }
            return v
        }
    }

    init(kind: String, stepCount: Int, state: [Int: Entry], paramGroups: [Group], extra: [String: Double]) {
        (self.kind, self.stepCount, self.state, self.paramGroups, self.extra) = (
            kind, stepCount, state, paramGroups, extra
        )
    }

    enum CodingKeys: String, CodingKey {
        case version, kind, state, extra
        case stepCount = "step_count", paramGroups = "param_groups"
    }

    /// The JSON text (sorted keys; infinities and NaN as the strings `inf`, `-inf`, `nan`).
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf",
            negativeInfinity: "-inf", nan: "nan")
        do { return String(decoding: try encoder.encode(self), as: UTF8.self) } catch {
            throw OptimizerStateError.badMetadata("cannot encode the metadata: \(error)")
        }
    }

    /// Parses ``json()``'s text; throws ``OptimizerStateError/badMetadata(_:)``.
    public init(json: String) throws {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf",
            negativeInfinity: "-inf", nan: "nan")
        do { self = try decoder.decode(OptimizerMetadata.self, from: Data(json.utf8)) } catch {
            throw OptimizerStateError.badMetadata("the metadata is not SwiftAI optimizer state: \(error)")
        }
        guard version == Self.currentVersion else {
            throw OptimizerStateError.badMetadata(
                "format version \(version); this SwiftAI reads "
                    + "\(Self.currentVersion)")
        }
    }
}

/// An optimizer's state in torch.optim's layout: tensors named `state.<index>.<name>` (parameters numbered over
/// the groups in order, as PyTorch) and everything else in ``metadata``.
public struct OptimizerStateDict {
    public var tensors: [String: Tensor]
    public var metadata: OptimizerMetadata

    public init(tensors: [String: Tensor], metadata: OptimizerMetadata) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// What to put in a safetensors file: the tensors with `prefix` before their names, and the metadata's JSON
    /// under ``OptimizerMetadata/key`` (merge both into a larger checkpoint's).
    public func fileContents(prefix: String = "") throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let named = Dictionary(uniqueKeysWithValues: tensors.map { (prefix + $0.key, $0.value) })
        return (named, [OptimizerMetadata.key: try metadata.json()])
    }

    /// Takes an optimizer's state back out of a safetensors file's contents written with ``fileContents(prefix:)``:
    /// the tensors whose names start with `prefix` (without it) and the metadata under ``OptimizerMetadata/key``.
    public init(fileTensors: [String: Tensor], metadata: [String: String], prefix: String = "") throws {
        guard let json = metadata[OptimizerMetadata.key] else {
            throw OptimizerStateError.badMetadata(
                "no '\(OptimizerMetadata.key)' metadata: not a file of optimizer "
                    + "state")
        }
        self.metadata = try OptimizerMetadata(json: json)
        tensors = [:]
        for (name, t) in fileTensors where name.hasPrefix(prefix) { tensors[String(name.dropFirst(prefix.count))] = t }
    }
}

extension Optimizer {
    /// The state in torch.optim's layout (see ``OptimizerStateDict``). The tensors are the optimizer's own (never
    /// written in place).
    public func stateDict() -> OptimizerStateDict {
        var tensors: [String: Tensor] = [:], entries: [Int: OptimizerMetadata.Entry] = [:]
        var groups: [OptimizerMetadata.Group] = []
        var index = 0
        for pg in paramGroups {
            var g = OptimizerMetadata.Group(
                params: Array(index..<(index + pg.params.count)), lr: pg.hyper.lr,
                weightDecay: pg.hyper.wd, lrMult: pg.lrMult)
            encode(pg.hyper, into: &g)
            groups.append(g)
            for p in pg.params {
                if let saved = perParameter[ObjectIdentifier(p)]?.saved {
                    for (name, t) in saved.tensors { tensors["state.\(index).\(name)"] = t }
                    if let s = saved.step { entries[index] = OptimizerMetadata.Entry(step: s) }
                }
                index += 1
            }
        }
        return OptimizerStateDict(
            tensors: tensors,
            metadata: OptimizerMetadata(
                kind: kind, stepCount: stepCount, state: entries, paramGroups: groups, extra: extraState))
    }

    /// Loads state saved by ``stateDict()`` from an optimizer of the same kind over parameters of the same shapes
    /// and dtypes, grouped the same way: per-parameter state, hyper-parameters, `lrMult` and the step count.
    /// Checks everything first; on ``OptimizerStateError`` nothing has changed.
    public func load(stateDict sd: OptimizerStateDict) throws {
        let m = sd.metadata
        guard m.kind == kind else { throw OptimizerStateError.wrongKind(expected: kind, found: m.kind) }
        guard m.paramGroups.count == paramGroups.count else {
            throw OptimizerStateError.groupCount(expected: paramGroups.count, found: m.paramGroups.count)
        }
        guard m.stepCount >= 0 else { throw OptimizerStateError.badMetadata("step_count is \(m.stepCount)") }
        var hypers: [Hyper] = [], params: [Parameter] = []
        for (i, (pg, saved)) in zip(paramGroups, m.paramGroups).enumerated() {
            let expected = params.count..<(params.count + pg.params.count)
            guard saved.params.count == pg.params.count else {
                throw OptimizerStateError.parameterCount(group: i, expected: pg.params.count, found: saved.params.count)
            }
            guard saved.params == Array(expected) else {
                throw OptimizerStateError.parameterIndices(group: i, expected: expected, found: saved.params)
            }
            var h = pg.hyper
            (h.lr, h.wd) = (saved.lr, saved.weightDecay)
            try decode(saved, index: i, into: &h)
            hypers.append(h)
            params += pg.params
        }
        var saved: [Int: SavedOptimizerState] = [:]
        for (i, entry) in m.state {
            guard params.indices.contains(i) else { throw OptimizerStateError.unexpectedState("state.\(i)") }
            saved[i] = SavedOptimizerState(step: entry.step)
        }
        for (name, t) in sd.tensors.sorted(by: { $0.key < $1.key }) {
            let parts = name.split(separator: ".", maxSplits: 2)
            guard parts.count == 3, parts[0] == "state", let i = Int(parts[1]), params.indices.contains(i) else {
                throw OptimizerStateError.unexpectedState(name)
            }
            let p = params[i].value
            guard t.shape == p.shape else {
                throw OptimizerStateError.shape(tensor: name, expected: p.shape, found: t.shape)
            }
            guard t.dtype == p.dtype else {
                throw OptimizerStateError.dtype(tensor: name, expected: p.dtype, found: t.dtype)
            }
            saved[i, default: SavedOptimizerState()].tensors[String(parts[2])] = t.detached().contiguous()
        }
        var state: [ObjectIdentifier: any OptimizerState] = [:]
        for (i, var s) in saved.sorted(by: { $0.key < $1.key }) {
            s.index = i
            state[ObjectIdentifier(params[i])] = try stateType.init(from: &s)
            if let name = s.tensors.keys.min() ?? (s.step != nil ? "step" : nil) {
                throw OptimizerStateError.unexpectedState("state.\(i).\(name)")
            }
        }
        for i in paramGroups.indices {
            paramGroups[i].hyper = hypers[i]
            paramGroups[i].lrMult = m.paramGroups[i].lrMult
        }
        perParameter = state
        stepCount = m.stepCount
        restoreExtra(m.extra)
    }

    /// Saves ``stateDict()`` as one safetensors file (atomically: a temporary file, then a rename): tensors named
    /// `state.<index>.<name>`, the rest as JSON in `__metadata__` under ``OptimizerMetadata/key``.
    public func save(to url: URL) throws {
        let c = try stateDict().fileContents()
        try Safetensors.write(c.tensors, metadata: c.metadata, to: url.path)
    }

    /// Loads a file written by ``save(to:)``. Throws `SafetensorsError` for an unreadable file and
    /// ``OptimizerStateError`` for state that does not fit; either way the optimizer is unchanged.
    public func load(from url: URL) throws {
        let (tensors, metadata) = try Safetensors.read(path: url.path)
        try load(stateDict: OptimizerStateDict(fileTensors: tensors, metadata: metadata))
    }
}
