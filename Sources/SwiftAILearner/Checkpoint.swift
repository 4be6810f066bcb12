import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// Where a run stands: which fit of the learner's run (`fit`, `fitOneCycle`, each phase of `fineTune`), its
/// length, and the next epoch and training batch to run.
public struct TrainingPosition: Codable, Equatable, Sendable, CustomStringConvertible {
    /// Index of the fit since the learner was built (`fineTune`'s frozen phase is 0, its unfrozen one 1).
    public var fit: Int
    public var nEpochs: Int
    public var epoch: Int
    /// Training batches of `epoch` already done (the loader's count: the training pass is done, validation is not).
    public var batch: Int
    /// Training batches done in the fit (what schedules are positioned by).
    public var trainIter: Int

    public init(fit: Int, nEpochs: Int, epoch: Int, batch: Int, trainIter: Int) {
        (self.fit, self.nEpochs, self.epoch, self.batch, self.trainIter) = (fit, nEpochs, epoch, batch, trainIter)
    }

    public var description: String { "fit \(fit), epoch \(epoch) of \(nEpochs), batch \(batch)" }
}

/// Why a checkpoint cannot be used.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    /// The file is missing, truncated or not a checkpoint.
    case unreadable(path: String, reason: String)
    /// Written by another checkpoint format version.
    case version(path: String, found: Int, expected: Int)
    /// It belongs to another model, dataset or run.
    case mismatch(path: String, what: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read checkpoint \(path): \(reason)"
        case let .version(path, found, expected):
            return "checkpoint \(path) has format version \(found); this SwiftAI reads version \(expected)"
        case let .mismatch(path, what): return "checkpoint \(path) does not fit this run: \(what)"
        }
    }
}

/// The checkpoint's JSON (in the safetensors metadata under `swiftai_checkpoint`), beside the model's tensors
/// (`model.<name>`) and the optimizer's (`optimizer.<name>`).
struct CheckpointMeta: Codable {
    static let formatVersion = 1
    static let key = "swiftai_checkpoint"

    struct DataShape: Codable, Equatable {
        var trainItems: Int, validItems: Int, batchSize: Int, vocab: [String]
    }

    var format: Int
    /// State-dict names → shape, to refuse another model's checkpoint by name.
    var model: [String: [Int]]
    var data: DataShape
    var position: TrainingPosition
    /// The default generator's state, then each ``RandomDrawing`` module's, in module order.
    var generators: [[UInt64]]
    var pathChoices: [String: Int]
    /// In a distributed run, every rank's kernel path choices (rank r resumes with its own); `nil` in one process.
    var rankPathChoices: [[String: Int]]?
    /// Callback type name (with `#n` for the n-th of a type) → its ``Callback/checkpointState()``.
    var callbacks: [String: Data]
}

extension Learner {
    /// Where the run stands now (between batches; after an epoch, the start of the next).
    public var position: TrainingPosition {
        let next = epochComplete
        return TrainingPosition(
            fit: Swift.max(fitsStarted - 1, 0), nEpochs: nEpochs, epoch: next ? epoch + 1 : epoch,
            batch: next ? 0 : trainBatchesDone, trainIter: trainIter)
    }

    /// Where the next fit continues a checkpoint loaded by ``resume(from:)``; `nil` when none is waiting.
    public var resumesAt: TrainingPosition? { pendingResume?.position }

    /// Saves everything a resumed run needs to end exactly as this one will — model, optimizer state, position,
    /// every generator, the kernel path choices, the recorder's history and the callbacks' state — in one
    /// safetensors file, written atomically (the previous checkpoint stays until the new one is complete).
    ///
    /// In a distributed job every rank calls it (the ranks' kernel path choices are gathered) and rank 0 writes.
    public func saveCheckpoint(to path: String) throws {
        var rankChoices: [[String: Int]]?
        if group.size > 1 {
            let mine = try JSONEncoder().encode(PathChoices.recorded())
            rankChoices = try group.allGather(mine).map { try JSONDecoder().decode([String: Int].self, from: $0) }
        }
        guard group.isMain else { return }
        var tensors: [String: Tensor] = [:], metadata: [String: String] = [:]
        for (k, t) in model.stateDict() { tensors["model." + k] = t }
        if let opt {
            let (t, m) = try opt.stateDict().fileContents(prefix: "optimizer.")
            tensors.merge(t) { a, _ in a }
            metadata = m
        }
        var states: [String: Data] = [:]
        for (key, cb) in keyedCallbacks() {
            if let s = try cb.checkpointState() { states[key] = s }
        }
        let meta = CheckpointMeta(
            format: CheckpointMeta.formatVersion, model: model.stateDict().mapValues(\.shape), data: dataShape,
            position: position,
            generators: ([Generator.default] + model.generators()).map(\.state),
            pathChoices: PathChoices.recorded(), rankPathChoices: rankChoices, callbacks: states)
        let json = String(decoding: try JSONEncoder().encode(meta), as: UTF8.self)
        metadata[CheckpointMeta.key] = json
        try Safetensors.write(tensors, metadata: metadata, to: path)
    }

    /// Loads a checkpoint written by ``saveCheckpoint(to:)`` into this learner — built as the checkpointed one was
    /// (same model, data and callbacks) — and makes the next `fit`/`fitOneCycle`/`fineTune` call continue where it
    /// stopped: fits the run had finished are skipped, and the one it was in starts at the saved epoch and batch.
    /// A checkpoint of another model, dataset or format is refused naming the difference; on any error nothing
    /// changes.
    public func resume(from path: String) throws {
        let (tensors, metadata): ([String: Tensor], [String: String])
        do {
            if group.size > 1 {
                // Rank 0 reads the file and sends it to the others: the hosts need not share a file system.
                let read = group.isMain ? Result { try Safetensors.mappedBytes(path: path) } : .success(Data())
                let bytes = group.broadcast((try? read.get()).map { Data([1]) + $0 } ?? Data([0]))
                if case let .failure(e) = read { throw e }
                guard bytes.first == 1 else {
                    throw CheckpointError.unreadable(path: path, reason: "rank 0 cannot read it")
                }
                (tensors, metadata) = try Safetensors.decode(Data(bytes.dropFirst()))
            } else {
                (tensors, metadata) = try Safetensors.read(path: path)
            }
        } catch let e as CheckpointError { throw e } catch {
            throw CheckpointError.unreadable(path: path, reason: "\(error)")
        }
        guard let json = metadata[CheckpointMeta.key] else {
            throw CheckpointError.unreadable(
                path: path, reason: "no '\(CheckpointMeta.key)' metadata (not a checkpoint)")
        }
        let meta: CheckpointMeta
        do {
            let probe = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let format = probe?["format"] as? Int ?? -1
            guard format == CheckpointMeta.formatVersion else {
                throw CheckpointError.version(path: path, found: format, expected: CheckpointMeta.formatVersion)
            }
            meta = try JSONDecoder().decode(CheckpointMeta.self, from: Data(json.utf8))
        } catch let e as CheckpointError { throw e } catch {
            throw CheckpointError.unreadable(path: path, reason: "bad metadata: \(error)")
        }
        if let difference = difference(from: meta) { throw CheckpointError.mismatch(path: path, what: difference) }
        let generators = [Generator.default] + model.generators()
        guard meta.generators.count == generators.count, meta.generators.allSatisfy({ $0.count == 7 }) else {
            throw CheckpointError.mismatch(
                path: path,
                what: "the checkpoint has \(meta.generators.count) generators, "
                    + "this model \(generators.count)")
        }
        var weights: [String: Tensor] = [:]
        for (k, t) in tensors where k.hasPrefix("model.") { weights[String(k.dropFirst(6))] = t }
        var optimizer: OptimizerStateDict?
        if metadata[OptimizerMetadata.key] != nil {
            do {
                optimizer = try OptimizerStateDict(fileTensors: tensors, metadata: metadata, prefix: "optimizer.")
            } catch {
                throw CheckpointError.unreadable(path: path, reason: "optimizer state: \(error)")
            }
        }
        do { try model.load(stateDict: weights) } catch {
            throw CheckpointError.mismatch(path: path, what: "\(error)")
        }
        // The default generator is restored only when the model draws from it: other code's use is not this run's.
        let usesDefault = model.generators().contains { $0 === Generator.default }
        for (g, s) in zip(generators, meta.generators) where g !== Generator.default || usesDefault { g.restore(s) }
        // Each rank of a job as large as the checkpointed one takes its own choices (ranks may have timed differently).
        let choices = meta.rankPathChoices.flatMap { $0.count == group.size ? $0[group.rank] : nil }
        PathChoices.reuse(choices ?? meta.pathChoices)
        pendingResume = PendingResume(path: path, meta: meta, optimizer: optimizer)
    }

    /// The first way `meta` does not fit this learner, in words.
    func difference(from meta: CheckpointMeta) -> String? {
        let mine = model.stateDict().mapValues(\.shape)
        if let k = meta.model.keys.sorted().first(where: { mine[$0] == nil }) {
            return "the checkpoint's model has '\(k)', this one does not"
        }
        if let k = mine.keys.sorted().first(where: { meta.model[$0] == nil }) {
            return "this model has '\(k)', the checkpoint's does not"
        }
        if let k = mine.keys.sorted().first(where: { mine[$0] != meta.model[$0] }) {
            return "'\(k)' has shape \(meta.model[k]!) in the checkpoint, \(mine[k]!) here"
        }
        let d = dataShape, c = meta.data
        if c.trainItems != d.trainItems || c.validItems != d.validItems {
            return "the checkpoint's data has \(c.trainItems) training and \(c.validItems) validation items, this data "
                + "\(d.trainItems) and \(d.validItems)"
        }
        if c.batchSize != d.batchSize { return "batch size \(c.batchSize) in the checkpoint, \(d.batchSize) here" }
        if c.vocab != d.vocab { return "the checkpoint's vocab is \(c.vocab), this data's \(d.vocab)" }
        return nil
    }

    var dataShape: CheckpointMeta.DataShape {
        .init(
            trainItems: dls.train.itemCount, validItems: dls.valid.itemCount, batchSize: dls.train.batchSize,
            vocab: dls.vocab)
    }

    /// Installed callbacks keyed by type name, with `#n` for the n-th of one type.
    func keyedCallbacks() -> [(String, Callback)] {
        var seen: [String: Int] = [:]
        return callbacks.map { cb in
            let name = String(describing: type(of: cb))
            let n = seen[name, default: 0]
            seen[name] = n + 1
            return (n == 0 ? name : "\(name)#\(n)", cb)
        }
    }
}

/// A loaded checkpoint waiting for the fit it continues.
struct PendingResume {
    let path: String
    let meta: CheckpointMeta
    let optimizer: OptimizerStateDict?

    var position: TrainingPosition { meta.position }

    /// Before the resumed fit's `beforeFit`: the callbacks' state (the recorder's history, trackers' best values).
    func restoreCallbacks(_ learn: Learner) throws {
        for (key, cb) in learn.keyedCallbacks() {
            if let s = meta.callbacks[key] { try cb.restore(checkpointState: s) }
        }
    }

    /// After `beforeFit` (which may regroup the optimizer's parameters, as discriminative learning rates do):
    /// the optimizer's state.
    func restoreOptimizer(_ learn: Learner) throws {
        guard let optimizer, let opt = learn.opt else { return }
        do { try opt.load(stateDict: optimizer) } catch {
            throw CheckpointError.mismatch(path: path, what: "optimizer: \(error)")
        }
    }
}

/// Saves a checkpoint every `every` epochs (after the epoch's other callbacks), and when Ctrl-C stops the fit,
/// so that `Learner.resume(from:)` can continue the run. In a distributed job rank 0 writes it.
public final class Checkpoint: Callback {
    public let path: String
    public let every: Int
    public override var order: Int { 80 }

    public init(path: String, every: Int = 1) {
        require(every >= 1, "Checkpoint: every must be ≥ 1, got \(every)")
        self.path = path
        self.every = every
    }

    public override func afterEpoch(_ learn: Learner) throws {
        guard !learn.isExploring else { return }
        if (learn.epoch + 1) % every == 0 || learn.epoch + 1 == learn.nEpochs { try learn.saveCheckpoint(to: path) }
    }

    public override func afterCancelFit(_ learn: Learner) throws {
        if learn.interrupted && !learn.isExploring { try learn.saveCheckpoint(to: path) }
    }
}
