import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

/// Saves a checkpoint and stops the fit: after training batch `batch` of `epoch` of fit `fit` (as Ctrl-C does), or
/// after epoch `epoch` (as a `kill -9` after an epoch's checkpoint does, `batch: nil`).
private final class StopAndSave: Callback {
    let path: String, fit: Int, epoch: Int, batch: Int?
    private var fits = 0
    init(_ path: String, fit: Int = 0, epoch: Int, batch: Int?) {
        (self.path, self.fit, self.epoch, self.batch) = (path, fit, epoch, batch)
    }
    override var order: Int { 95 }
    override func beforeFit(_ learn: Learner) { fits += 1 }
    override func afterBatch(_ learn: Learner) throws {
        guard fits - 1 == fit, learn.training, learn.epoch == epoch, learn.iter == batch else { return }
        try learn.saveCheckpoint(to: path)
        throw CancelFit("stopped for the test")
    }
    override func afterEpoch(_ learn: Learner) throws {
        guard fits - 1 == fit, batch == nil, learn.epoch == epoch else { return }
        try learn.saveCheckpoint(to: path)
        throw CancelFit("stopped for the test")
    }
}

@Suite struct CheckpointTests {
    /// A model with dropout (its own generator) and two layer groups, on shuffled data.
    func learner(
        _ dls: DataLoaders = syntheticData(train: 256, valid: 64, batchSize: 32), width: Int = 32,
        callbacks: [Callback] = []
    ) -> Learner {
        let g = Generator(seed: 11)
        let model = Sequential(
            Linear(16, width, generator: g), ReLU(), Dropout(0.3, generator: g),
            Linear(width, 4, generator: g))
        let learn = Learner(
            model: model, dls: dls, lr: 1e-2, metrics: [.accuracy], callbacks: callbacks,
            progress: false)
        learn.splitter = { m in
            let s = m as! Sequential
            return [s[0].parameters(), s[3].parameters()]
        }
        return learn
    }

    func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString).safetensors").path
    }

    func weights(_ learn: Learner) -> [[Float]] { learn.model.parameters().map(\.value.floats) }

    /// Runs `train` uninterrupted, then stopped by `stop` and resumed in a fresh learner: same weights, bit for bit,
    /// and the same history.
    func expectResumeIsExact(stop: (String) -> Callback, _ train: (Learner, [Callback]) throws -> Void) throws {
        let full = learner()
        try train(full, [])
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = learner()
        try train(first, [stop(path)])
        let stoppedEarly = weights(first) != weights(full)
        #expect(stoppedEarly)
        let resumed = learner()
        try resumed.resume(from: path)
        try train(resumed, [])
        let sameWeights = weights(resumed) == weights(full)
        #expect(sameWeights, "resumed weights differ from the uninterrupted run's")
        #expect(resumed.recorder.values.count == full.recorder.values.count)
        #expect(resumed.recorder.rawLosses == full.recorder.rawLosses)
        #expect(resumed.recorder.validLosses == full.recorder.validLosses)
    }

    @Test func fitOneCycleResumesExactlyAfterAnEpochOrMidEpoch() throws {
        try expectResumeIsExact(stop: { StopAndSave($0, epoch: 0, batch: nil) }) {
            try $0.fitOneCycle(3, callbacks: $1)
        }
        try expectResumeIsExact(stop: { StopAndSave($0, epoch: 1, batch: 3) }) { try $0.fitOneCycle(3, callbacks: $1) }
    }

    @Test func fitResumesExactly() throws {
        try expectResumeIsExact(stop: { StopAndSave($0, epoch: 1, batch: 5) }) { try $0.fit(2, callbacks: $1) }
    }

    @Test func fineTuneResumesExactlyInEitherPhase() throws {
        let tune = { (l: Learner, cbs: [Callback]) in try l.fineTune(2, baseLr: 1e-2, freezeEpochs: 1, callbacks: cbs) }
        try expectResumeIsExact(stop: { StopAndSave($0, fit: 0, epoch: 0, batch: 2) }, tune)
        try expectResumeIsExact(stop: { StopAndSave($0, fit: 1, epoch: 0, batch: nil) }, tune)
    }

    @Test func checkpointCallbackSavesEveryEpochAndTrackersCarryOn() throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let learn = learner(callbacks: [Checkpoint(path: path, every: 2)])
        try learn.fit(1)
        let resumed = learner()
        try resumed.resume(from: path)
        #expect(resumed.resumesAt == TrainingPosition(fit: 0, nEpochs: 1, epoch: 1, batch: 0, trainIter: 8))
        // EarlyStopping's best and patience count travel with the checkpoint.
        let stopper = EarlyStopping(patience: 5)
        let a = learner(callbacks: [stopper, Checkpoint(path: path)])
        try a.fit(2)
        let restored = EarlyStopping(patience: 5)
        let b = learner(callbacks: [restored])
        try b.resume(from: path)
        try b.fit(2)
        #expect(restored.best == stopper.best)
    }

    @Test func refusesAnotherModelDataOrFormatAndKeepsTheLearner() throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let learn = learner()
        try learn.fit(1)
        try learn.saveCheckpoint(to: path)
        let wider = learner(width: 48)
        let before = weights(wider)
        #expect { try wider.resume(from: path) } throws: { e in
            guard case let .mismatch(_, what) = e as? CheckpointError else { return false }
            return what.contains("0.bias") && what.contains("[48]")
        }
        #expect(weights(wider) == before)
        let other = learner(syntheticData(train: 320, valid: 64, batchSize: 32))
        #expect { try other.resume(from: path) } throws: { e in
            guard case let .mismatch(_, what) = e as? CheckpointError else { return false }
            return what.contains("320")
        }
        // A different fit length is refused when the fit starts.
        let shorter = learner()
        try shorter.resume(from: path)
        #expect(throws: CheckpointError.self) { try shorter.fit(3) }
        // Another format version, and a truncated file.
        let (tensors, metadata0) = try Safetensors.read(path: path)
        var metadata = metadata0
        metadata["swiftai_checkpoint"] = metadata0["swiftai_checkpoint"]!.replacingOccurrences(
            of: "\"format\":1",
            with: "\"format\":99")
        let future = tempPath(), cut = tempPath()
        defer { for p in [future, cut] { try? FileManager.default.removeItem(atPath: p) } }
        try Safetensors.write(tensors, metadata: metadata, to: future)
        #expect(throws: CheckpointError.version(path: future, found: 99, expected: 1)) {
            try learner().resume(from: future)
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let fresh = learner()
        let freshWeights = weights(fresh)
        #expect { try fresh.resume(from: cut) } throws: { e in
            guard case .unreadable = e as? CheckpointError else { return false }
            return true
        }
        #expect(weights(fresh) == freshWeights)
    }
}
