import Testing
import SwiftAICore
import SwiftAIData
@testable import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

/// `y = x · w` with one weight: no convolution or linear layer, so float16 loss scaling runs on any CPU.
final class ScaleModel: Module {
    let w = Parameter(Tensor([Float(0.5)]))
    override func forward(_ x: Tensor) -> Tensor { x * w.value }
}

@Suite struct MixedPrecisionTests {
    /// Four batches of 16 targets `0.25 · x`, trained with SGD.
    func learner(_ callbacks: [Callback]) -> (Learner, ScaleModel) {
        let x = Tensor.rand([64, 1], generator: Generator(seed: 3))
        let dl = DataLoader(x, x * 0.25, batchSize: 16)
        let m = ScaleModel()
        let l = Learner(
            model: m, dls: DataLoaders(train: dl, valid: DataLoader(x, x * 0.25, batchSize: 64)), lossFunc: MSELoss(),
            lr: 0.5, callbacks: callbacks, progress: false, optFunc: { SGD($0.parameters(), lr: $1) })
        return (l, m)
    }

    @Test func lossScalingTrainsLikeFloat32AndRecordsTheUnscaledLoss() throws {
        let (plain, p) = learner([])
        try plain.fit(2)
        let mp = MixedPrecision(.float16, scaler: GradScaler(initScale: 65536), unavailable: nil)
        let (scaled, s) = learner([mp, TerminateOnNaN()])
        try scaled.fit(2)
        #expect(abs(s.w.value.floats[0] - p.w.value.floats[0]) < 1e-6)
        #expect(zip(scaled.recorder.losses, plain.recorder.losses).allSatisfy { abs($0 - $1) < 1e-7 })
        #expect(scaled.opt!.stepCount == 8 && mp.scaler!.scale == 65536)
    }

    @Test func overflowingStepsAreSkippedAndTheScaleBacksOff() throws {
        // 2¹²⁹ and 2¹²⁸ overflow float32: the first two steps are skipped, then 2¹²⁷ works.
        let mp = MixedPrecision(.float16, scaler: GradScaler(initScale: 0x1p129), unavailable: nil)
        let (l, m) = learner([mp, TerminateOnNaN()])
        var weights: [Float] = []
        let watch = Watch { weights.append(m.w.value.floats[0]) }
        try l.fit(1, callbacks: [watch])
        #expect(l.stopReason == nil)
        #expect(mp.scaler!.scale == 0x1p127 && l.opt!.stepCount == 2)
        #expect(weights[0...2] == [0.5, 0.5, 0.5] && weights[3] < 0.5)
        #expect(l.trainIter == 4 && l.recorder.losses.allSatisfy(\.isFinite))
    }

    @Test func toBF16SaysOnceWhyItStaysFloat32OrComputesInBF16() throws {
        let model = Sequential(Linear(1, 4), ReLU(), Linear(4, 1))
        let x = Tensor.rand([32, 1], generator: Generator(seed: 1))
        let dls = DataLoaders(train: DataLoader(x, x, batchSize: 16), valid: DataLoader(x, x, batchSize: 32))
        let learn = Learner(model: model, dls: dls, lossFunc: MSELoss(), progress: false)
        var notes: [String] = []
        learn.toBF16 { notes.append($0) }
        let cb = try #require(learn.callback(MixedPrecision.self))
        #expect(cb.scaler == nil)
        if let why = cb.unavailable {
            #expect(notes == ["\(why) — training stays float32"])
        } else if CPUFeatures.referenceForced {  // never silent: the reference path says so
            #expect(notes.count == 1 && notes[0].contains("reference path"), "\(notes)")
        } else {
            #expect(notes.isEmpty)
        }
        var seen: [DType] = []
        try learn.fit(1, callbacks: [Watch { seen.append(Autocast.precision) }])
        #expect(seen == [DType](repeating: cb.unavailable == nil ? .bfloat16 : .float32, count: 2))
        #expect(Autocast.precision == .float32)
        learn.toFP16 { notes.append($0) }
        #expect(
            learn.callbacks.filter { $0 is MixedPrecision }.count == 1
                && learn.callback(MixedPrecision.self)?.precision == .float16)
        learn.toFP32()
        #expect(learn.callback(MixedPrecision.self) == nil)
    }

    @Test func cancelStepSkipsOnlyTheOptimizerStep() throws {
        let (l, _) = learner([])
        let skip = SkipFirstStep()
        try l.fit(1, callbacks: [skip])
        #expect(l.opt!.stepCount == 3 && skip.afterSteps == 4 && l.trainIter == 4)
    }
}

/// Runs `body` before each training step.
private final class Watch: Callback {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    override func beforeStep(_ learn: Learner) throws { body() }
}

/// Cancels the first batch's step and counts `afterStep`.
private final class SkipFirstStep: Callback {
    var afterSteps = 0
    override func beforeStep(_ learn: Learner) throws { if learn.iter == 0 { throw CancelStep() } }
    override func afterStep(_ learn: Learner) throws { afterSteps += 1 }
}
