import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

/// Records each optimizer group's learning rate at the last training batch.
final class GroupLRs: Callback {
    var lrs: [Double] = []
    override func afterBatch(_ learn: Learner) { if learn.training { lrs = learn.opt!.paramGroups.map(\.hyper.lr) } }
}

@Suite struct TransferTests {
    /// A body (Linear + BatchNorm1d) and a head, in two layer groups.
    func learner() -> (Learner, body: Linear, bn: BatchNorm1d, head: Linear) {
        let g = Generator(seed: 3)
        let body = Linear(16, 32, generator: g), bn = BatchNorm1d(32), head = Linear(32, 4, generator: g)
        let model = Sequential(body, bn, ReLU(), head)
        let learn = Learner(model: model, dls: syntheticData(), lr: 1e-2, progress: false)
        learn.splitter = { _ in [body.parameters() + bn.parameters(), head.parameters()] }
        return (learn, body, bn, head)
    }

    @Test func slicesSpreadAsFastai() {
        let v = LearningRate.slice(1e-6, 1e-4).values(groups: 3)
        #expect(zip(v, [1e-6, 1e-5, 1e-4]).allSatisfy { abs($0 - $1) < 1e-18 })
        #expect(LearningRate.slice(upTo: 1e-3).values(groups: 3) == [1e-4, 1e-4, 1e-3])
        #expect(
            LearningRate(2e-3).values(groups: 2) == [2e-3, 2e-3] && LearningRate.slice(1, 4).values(groups: 1) == [4])
    }

    @Test func freezeKeepsBatchNormTrainingAndUnfreezeRestores() throws {
        let (learn, body, bn, head) = learner()
        learn.freeze()
        #expect(body.parameters().allSatisfy { !$0.requiresGrad } && bn.parameters().allSatisfy { $0.requiresGrad })
        #expect(head.parameters().allSatisfy { $0.requiresGrad })
        let w0 = body.weight.value.doubles, bn0 = bn.weight!.value.doubles, h0 = head.weight.value.doubles
        try learn.fit(1)
        #expect(body.weight.value.doubles == w0 && bn.weight!.value.doubles != bn0 && head.weight.value.doubles != h0)
        #expect(learn.opt!.hasState)
        learn.unfreeze()
        #expect(learn.model.parameters().allSatisfy { $0.requiresGrad } && !learn.opt!.hasState)
        learn.freezeTo(5)  // more groups than there are: everything but BatchNorm frozen
        #expect(head.parameters().allSatisfy { !$0.requiresGrad } && bn.parameters().allSatisfy { $0.requiresGrad })
    }

    @Test func discriminativeRatesFollowTheOneCycleTogether() throws {
        let (learn, body, _, head) = learner()
        let rec = GroupLRs()
        try learn.fitOneCycle(1, lrMax: .slice(1e-4, 1e-2), callbacks: [rec])
        // Every optimizer group holds one layer group's parameters, at that group's share of the last rate.
        let groups = learn.opt!.paramGroups
        let bodyLR = groups.first { $0.params.contains { $0 === body.weight } }!.hyper.lr
        let headLR = groups.first { $0.params.contains { $0 === head.weight } }!.hyper.lr
        #expect(abs(bodyLR / headLR - 1e-2) < 1e-9)
        #expect(rec.lrs.count == groups.count && abs(headLR - learn.recorder.lrs.last!) < 1e-15)
        // A plain rate afterwards applies to every group again.
        try learn.fit(1, lr: 1e-3)
        #expect(learn.opt!.paramGroups.allSatisfy { $0.hyper.lr == 1e-3 })
    }

    @Test func fineTuneTrainsTheHeadThenEverything() throws {
        let (learn, body, _, _) = learner()
        let w0 = body.weight.value.doubles
        final class BodyWatch: Callback {
            let body: Linear, start: [Double]
            var changedWhileFrozen = false
            init(_ body: Linear, _ start: [Double]) { self.body = body; self.start = start }
            override func afterEpoch(_ learn: Learner) {
                if learn.nEpochs == 1 && body.weight.value.doubles != start { changedWhileFrozen = true }
            }
        }
        let watch = BodyWatch(body, w0)
        try learn.fineTune(2, baseLr: 1e-2, callbacks: [watch])
        #expect(!watch.changedWhileFrozen && body.weight.value.doubles != w0)
        #expect(learn.model.parameters().allSatisfy { $0.requiresGrad })
        #expect(learn.recorder.values.count == 2)  // the recorder keeps the last fit: the unfrozen epochs
        let lrs = learn.opt!.paramGroups.map(\.hyper.lr)
        #expect(abs(lrs.min()! / lrs.max()! - 0.01) < 1e-9)  // slice(lr/100, lr)
    }

    /// A step that cannot fit in memory is refused before training, with the estimate and a batch size that fits.
    @Test func aBatchThatCannotFitIsRefusedBeforeTraining() throws {
        let (learn, body, _, _) = learner()
        let w0 = body.weight.value.doubles
        learn.memoryLimitBytes = 20_000
        do {
            try learn.fit(1)
            Issue.record("expected an out-of-memory refusal")
        } catch let e as LearnerError {
            #expect("\(e)".contains("not enough memory") && "\(e)".contains("use a batch size of"))
        }
        #expect(body.weight.value.doubles == w0 && learn.recorder.rawLosses.isEmpty)
        learn.memoryLimitBytes = 1 << 40
        try learn.fit(1)
        #expect(learn.recorder.rawLosses.count == learn.dls.train.count)
    }

    @Test func flipTTAIsTheMeanOfPlainAndMirroredPredictions() throws {
        let g = Generator(seed: 5)
        let x = Tensor.randn([24, 1, 4, 4], generator: g), y = Tensor.randint(0, 3, [24], generator: g)
        // Training batches are cropped and flipped; the validation loader carries the transforms but does not apply
        // them.
        let augment: [BatchTransform] = [RandomCrop(padding: 1), RandomFlip()]
        let dls = DataLoaders(
            train: DataLoader(TensorDataset(x, y), batchSize: 8, shuffle: true, batchTransforms: augment),
            valid: DataLoader(TensorDataset(x, y), batchSize: 8, batchTransforms: augment))
        let model = Sequential(Flatten(), Linear(16, 3, generator: g))
        let learn = Learner(model: model, dls: dls, progress: false)
        let plain = try learn.getPreds().preds
        let probs = { (x: Tensor) in noGrad { learn.lossFunc.activation(model(x)) } }
        #expect(closeness(plain, probs(x), rtol: 1e-5, atol: 1e-6).ok)
        let mirrored = RandomFlip(p: 1).apply((x, y), generator: g, training: true).x
        #expect(mirrored[element: [0, 0, 1, 0]] == x[element: [0, 0, 1, 3]])
        let flipTTA = try learn.tta(n: 1, beta: 0.5, transforms: [RandomFlip(p: 1)]).preds
        #expect(closeness(flipTTA, (plain + probs(mirrored)) * 0.5, rtol: 1e-5, atol: 1e-6).ok)
        // fastai's tta draws the loader's own training transforms: different from the plain pass.
        #expect(!closeness(try learn.tta(n: 2, beta: nil).preds, plain, rtol: 1e-3, atol: 1e-4).ok)
    }
}
