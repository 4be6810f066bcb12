import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

/// A small separable problem: 4 classes decided by a fixed linear map of 16 features.
func syntheticData(train: Int = 512, valid: Int = 128, seed: UInt64 = 7, batchSize: Int = 64) -> DataLoaders {
    let g = Generator(seed: seed)
    let w = Tensor.randn([16, 4], generator: g)
    func make(_ n: Int) -> (Tensor, Tensor) {
        let x = Tensor.randn([n, 16], generator: g)
        return (x, x.matmul(w).argmax(dim: 1))
    }
    let (tx, ty) = make(train), (vx, vy) = make(valid)
    return DataLoaders(
        train: DataLoader(tx, ty, batchSize: batchSize, shuffle: true, seed: seed),
        valid: DataLoader(vx, vy, batchSize: batchSize * 2))
}

func mlp(seed: UInt64 = 1) -> Sequential {
    let g = Generator(seed: seed)
    return Sequential(Linear(16, 32, generator: g), ReLU(), Linear(32, 4, generator: g))
}

/// Logs every event it receives.
final class EventLog: Callback {
    var events: [String] = []
    let cancel: [String: Error]
    init(cancel: [String: Error] = [:]) { self.cancel = cancel }
    func log(_ e: String, _ l: Learner) throws {
        events.append(e)
        if let err = cancel[e + (l.training ? "/train" : "/valid")] ?? cancel[e] { throw err }
    }
    override func beforeFit(_ l: Learner) throws { try log("beforeFit", l) }
    override func afterFit(_ l: Learner) throws { try log("afterFit", l) }
    override func cleanupFit(_ l: Learner) throws { try log("cleanupFit", l) }
    override func afterCancelFit(_ l: Learner) throws { try log("afterCancelFit", l) }
    override func beforeEpoch(_ l: Learner) throws { try log("beforeEpoch", l) }
    override func afterEpoch(_ l: Learner) throws { try log("afterEpoch", l) }
    override func afterCancelEpoch(_ l: Learner) throws { try log("afterCancelEpoch", l) }
    override func beforeTrain(_ l: Learner) throws { try log("beforeTrain", l) }
    override func afterTrain(_ l: Learner) throws { try log("afterTrain", l) }
    override func afterCancelTrain(_ l: Learner) throws { try log("afterCancelTrain", l) }
    override func beforeValidate(_ l: Learner) throws { try log("beforeValidate", l) }
    override func afterValidate(_ l: Learner) throws { try log("afterValidate", l) }
    override func afterCancelValidate(_ l: Learner) throws { try log("afterCancelValidate", l) }
    override func beforeBatch(_ l: Learner) throws { try log("beforeBatch", l) }
    override func afterPredict(_ l: Learner) throws { try log("afterPredict", l) }
    override func afterLoss(_ l: Learner) throws { try log("afterLoss", l) }
    override func beforeBackward(_ l: Learner) throws { try log("beforeBackward", l) }
    override func afterBackward(_ l: Learner) throws { try log("afterBackward", l) }
    override func beforeStep(_ l: Learner) throws { try log("beforeStep", l) }
    override func afterStep(_ l: Learner) throws { try log("afterStep", l) }
    override func afterBatch(_ l: Learner) throws { try log("afterBatch", l) }
    override func afterCancelBatch(_ l: Learner) throws { try log("afterCancelBatch", l) }
    override func cleanupBatch(_ l: Learner) throws { try log("cleanupBatch", l) }
}

@Suite struct LearnerLoopTests {
    func learner(
        _ dls: DataLoaders = syntheticData(train: 128, valid: 64), callbacks: [Callback] = [], lr: Double = 1e-2
    ) -> Learner {
        Learner(model: mlp(), dls: dls, lr: lr, metrics: [.accuracy], callbacks: callbacks, progress: false)
    }

    @Test func eventsRunInOrder() throws {
        let log = EventLog()
        let learn = learner(syntheticData(train: 128, valid: 64, batchSize: 64))
        try learn.fit(1, callbacks: [log])
        let batchTrain = [
            "beforeBatch", "afterPredict", "afterLoss", "beforeBackward", "afterBackward", "beforeStep", "afterStep",
            "afterBatch", "cleanupBatch"
        ]
        let batchValid = ["beforeBatch", "afterPredict", "afterLoss", "afterBatch", "cleanupBatch"]
        let expected =
            ["beforeFit", "beforeEpoch", "beforeTrain"] + batchTrain + batchTrain + ["afterTrain", "beforeValidate"]
            + batchValid + ["afterValidate", "afterEpoch", "afterFit", "cleanupFit"]
        #expect(log.events == expected)
        #expect(learn.callback(EventLog.self) == nil)  // fit-only callbacks are removed afterwards
    }

    @Test func cancellationsSkipAhead() throws {
        let learn = learner()
        // CancelBatch after the prediction of training batches: no backward, no step, but afterBatch still runs.
        let log = EventLog(cancel: ["afterPredict/train": CancelBatch()])
        let before = learn.model.parameters().map(\.value.floats)
        try learn.fit(1, callbacks: [log])
        #expect(!log.events.contains("afterBackward") && log.events.contains("afterCancelBatch"))
        #expect(learn.model.parameters().map(\.value.floats) == before)
        // CancelTrain ends the training phase; validation still runs.
        let t = EventLog(cancel: ["afterBatch/train": CancelTrain()])
        try learn.fit(1, callbacks: [t])
        #expect(
            t.events.filter { $0 == "afterStep" }.count == 1 && t.events.contains("afterCancelTrain")
                && t.events.contains("afterValidate"))
        // CancelEpoch skips to the next epoch; CancelFit ends everything (afterFit and cleanup still run).
        let e = EventLog(cancel: ["afterTrain": CancelEpoch()])
        try learn.fit(2, callbacks: [e])
        #expect(e.events.filter { $0 == "beforeEpoch" }.count == 2 && !e.events.contains("beforeValidate"))
        let f = EventLog(cancel: ["beforeEpoch": CancelFit()])
        try learn.fit(3, callbacks: [f])
        #expect(f.events == ["beforeFit", "beforeEpoch", "afterCancelFit", "afterFit", "cleanupFit"])
        let v = EventLog(cancel: ["beforeValidate": CancelValidate()])
        try learn.fit(1, callbacks: [v])
        let afterValid = v.events.drop { $0 != "beforeValidate" }
        #expect(afterValid.contains("afterCancelValidate") && !afterValid.contains("beforeBatch"))
        // Other errors propagate, and cleanup events still run.
        struct Boom: Error {}
        let b = EventLog(cancel: ["afterLoss/train": Boom()])
        #expect(throws: Boom.self) { try learn.fit(1, callbacks: [b]) }
        #expect(Array(b.events.suffix(3)) == ["afterLoss", "cleanupBatch", "cleanupFit"])
    }

    @Test func callbacksRunByOrderAndTrainStepIsReplaceable() throws {
        final class Tag: Callback {
            let rank: Int, name: String, sink: (String) -> Void
            override var order: Int { rank }
            init(_ rank: Int, _ name: String, _ sink: @escaping (String) -> Void) {
                self.rank = rank
                self.name = name
                self.sink = sink
            }
            override func beforeFit(_ learn: Learner) { sink(name) }
        }
        var seen: [String] = []
        let learn = learner(callbacks: [
            Tag(5, "b") { seen.append($0) }, Tag(-3, "a") { seen.append($0) }, Tag(99, "c") { seen.append($0) }
        ])
        try learn.fit(1)
        #expect(seen == ["a", "b", "c"])
        /// Accumulates gradients over two batches before stepping.
        final class Accumulate: TrainStep {
            var steps = 0
            override func step(_ learn: Learner) throws {
                if learn.iter % 2 == 1 { try super.step(learn); steps += 1 }
            }
            override func zeroGrad(_ learn: Learner) throws {
                if learn.iter % 2 == 1 { try super.zeroGrad(learn) }
            }
        }
        let acc = Accumulate()
        learn.trainStep = acc
        try learn.fit(1)
        #expect(acc.steps == learn.dls.train.count / 2)
    }

    @Test func metricsAndRecorder() throws {
        let learn = learner(syntheticData(train: 512, valid: 128))
        try learn.fit(3, lr: 3e-2)
        let r = learn.recorder
        #expect(r.metricNames == ["train_loss", "valid_loss", "accuracy"])
        #expect(r.values.count == 3 && r.losses.count == 3 * learn.dls.train.count && r.lrs.allSatisfy { $0 == 3e-2 })
        // The recorded validation loss and accuracy equal a direct evaluation.
        learn.model.eval()
        let valid = try #require(learn.dls.valid.dataset as? TensorDataset)
        let x = valid.x, y = valid.y
        let out = noGrad { learn.model(x) }
        #expect(abs(r.last("valid_loss")! - crossEntropy(out, y).item()) < 1e-5)
        #expect(abs(r.last("accuracy")! - (out.argmax(dim: 1) .== y).to(.float64).mean().item()) < 1e-9)
        #expect(r.last("accuracy")! > 0.6)
        #expect(r.trainLosses.last! < r.trainLosses.first!)
        // The smoothed loss is fastai's debiased EWMA of the raw losses.
        var s = 0.0
        for (i, l) in r.rawLosses.enumerated() {
            s = 0.98 * s + 0.02 * l; #expect(abs(r.losses[i] - s / (1 - pow(0.98, Double(i + 1)))) < 1e-9)
        }
        #expect(r.trainItemsPerSecond > 0)
    }

    @Test func schedulesDriveHyperParameters() throws {
        let learn = learner()
        try learn.fitOneCycle(2, lrMax: 1e-2)
        let n = 2 * learn.dls.train.count
        let (lr, mom) = Schedule.fastaiOneCycle(lrMax: 1e-2)
        for i in 0..<n {
            #expect(abs(learn.recorder.lrs[i] - lr(i, n)) < 1e-12 && abs(learn.recorder.moms[i] - mom(i, n)) < 1e-12)
        }
        try learn.fit(3, callbacks: [EpochScheduler([(\.lr, Schedule.stepDecay(base: 0.1, stepSize: 1, gamma: 0.5))])])
        let per = learn.dls.train.count
        #expect(learn.recorder.lrs[0] == 0.1 && learn.recorder.lrs[per] == 0.05 && learn.recorder.lrs[2 * per] == 0.025)
    }

    @Test func singleBatchAndGetPreds() throws {
        let learn = learner()
        let log = EventLog()
        try learn.fit(5, callbacks: [SingleBatch(), log])
        #expect(log.events.filter { $0 == "afterStep" }.count == 1)
        let (p, t) = try learn.getPreds()
        #expect(p.shape == [64, 4] && t.doubles == (learn.dls.valid.dataset as! TensorDataset).y.doubles)
        #expect(p.sum(dim: 1).doubles.allSatisfy { abs($0 - 1) < 1e-5 })
        let (p2, t2, l2) = try learn.getPreds(withLoss: true)
        #expect(p2.doubles == p.doubles && t2.doubles == t.doubles && l2.shape == [64])
        // Each item's loss is its cross-entropy: -log of the probability of its target.
        let probs = p.doubles, targets = t.scalars(as: Int64.self)
        #expect(
            zip(l2.doubles, targets.indices).allSatisfy {
                abs($0 + Foundation.log(probs[$1 * 4 + Int(targets[$1])])) < 1e-4
            })
        #expect(learn.callbacks.contains { $0 is Recorder })  // restored afterwards
    }

    @Test func dryRunCatchesOutputThatDoesNotFitTheLoss() throws {
        let bad = Learner(model: Sequential(Linear(16, 3)), dls: syntheticData(train: 64, valid: 32), progress: false)
        do {
            try bad.fit(1)
            Issue.record("expected a mismatch")
        } catch let e as LearnerError {
            #expect(
                e.description.contains(
                    "target class 3 does not exist: the model outputs 3 classes (output [64, 3], targets [64])"))
        }
        let wrongRank = Learner(
            model: Sequential(Linear(16, 4), Lambda { $0.unsqueeze(1) }), dls: syntheticData(train: 64, valid: 32),
            progress: false)
        #expect(throws: LearnerError.self) { try wrongRank.fit(1) }
    }

    @Test func progressPrintsFastaiTable() throws {
        var out = ""
        let learn = Learner(
            model: mlp(), dls: syntheticData(train: 128, valid: 64), metrics: [.accuracy],
            callbacks: [], progress: false)
        learn.add(ProgressCallback(live: false) { out += $0 })
        try learn.fit(2)
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("epoch     train_loss  valid_loss  accuracy  time"))
        #expect(lines[1].hasPrefix("0         ") && lines[2].hasPrefix("1         "))
        #expect(lines[1].split(separator: " ").count == 5 && lines[1].contains(":"))
        var live = ""
        let l2 = Learner(model: mlp(), dls: syntheticData(train: 128, valid: 64), progress: false)
        l2.add(ProgressCallback(live: true) { live += $0 })
        try l2.fit(1)
        #expect(live.contains("█") && live.contains("100.0%") && live.contains("<"))
    }
}
