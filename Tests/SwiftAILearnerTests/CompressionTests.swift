import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAITestSupport

/// The fixed logits of the PyTorch reference below (3 items, 4 classes).
private let student = Tensor((0..<3).flatMap { i in (0..<4).map { j in sin(Double(i * 5 + j)) * 2 } }, shape: [3, 4])
private let teacher = Tensor(
    (0..<3).flatMap { i in (0..<4).map { j in cos(Double(i * 3 + j * 2)) * 3 } }, shape: [3, 4])

@Suite struct DistillationTests {
    @Test func softLossMatchesPyTorch() {
        // torch 2.9.1: (F.kl_div(F.log_softmax(s/T, -1), F.softmax(t/T, -1), reduction="batchmean") * T*T).item()
        // with s[i][j] = 2 sin(5i + j), t[i][j] = 3 cos(3i + 2j), float64.
        for (t, want) in [(1.0, 1.1271484727861312), (4.0, 2.746949132388316)] {
            let got = distillationLoss(student: student, teacher: teacher, temperature: t).item()
            #expect(abs(got - want) < 1e-12, "T = \(t): \(got) vs \(want)")
        }
        #expect(distillationLoss(student: teacher, teacher: teacher, temperature: 2).item() < 1e-12)
    }

    @Test func softLossGradient() {
        gradcheck([student], "distillationLoss") { distillationLoss(student: $0[0], teacher: teacher, temperature: 3) }
    }

    @Test func callbackBlendsTheLossesOnTrainingBatchesOnly() throws {
        let x = Tensor.randn([16, 6], generator: Generator(seed: 1)), y = Tensor((0..<16).map { Int64($0 % 3) })
        let dls = DataLoaders(
            train: DataLoader(x, y, batchSize: 16, prefetch: 0), valid: DataLoader(x, y, batchSize: 16, prefetch: 0))
        let model = Linear(6, 3, generator: Generator(seed: 2)),
            teacherModel = Linear(6, 3, generator: Generator(seed: 3))
        let hard = crossEntropy(noGrad { model(x) }, y).item()
        let soft = distillationLoss(student: noGrad { model(x) }, teacher: noGrad { teacherModel(x) }, temperature: 2)
            .item()
        final class FirstLoss: Callback {
            var train: Double?, valid: Double?
            override func afterLoss(_ learn: Learner) throws {
                if learn.training { train = train ?? learn.loss!.item() } else { valid = valid ?? learn.loss!.item() }
            }
            override var order: Int { 10 }  // after Distillation (order 0)
        }
        let probe = FirstLoss()
        let learn = Learner(
            model: model, dls: dls, lr: 0,
            callbacks: [Distillation(teacher: teacherModel, temperature: 2, alpha: 0.3), probe],
            progress: false)
        try learn.fit(1)
        #expect(abs(probe.train! - (0.7 * hard + 0.3 * soft)) < 1e-5)
        #expect(abs(probe.valid! - hard) < 1e-5)  // lr 0: the model is unchanged
    }
}

/// conv (3×2×2×2) then linear (4×5) with w[i] = sin(1.7 i + layer)·(1 + 0.01 i): no ties in magnitude.
private func prunable() -> (Sequential, Conv2d, Linear) {
    let conv = Conv2d(2, 3, kernelSize: 2), lin = Linear(5, 4)
    for (l, p) in [conv.weight, lin.weight].enumerated() {
        let values: [Double] = (0..<p.value.count).map { i in
            let d = Double(i)
            return sin(1.7 * d + Double(l)) * (1 + 0.01 * d)
        }
        p.setData(Tensor(values, shape: p.shape))
    }
    return (Sequential(conv, lin), conv, lin)
}

private func zeros(_ p: Parameter) -> [Int] { p.value.floats.indices.filter { p.value.floats[$0] == 0 } }

@Suite struct PruningTests {
    @Test func l1PruningMatchesPyTorch() {
        // torch.nn.utils.prune.global_unstructured([(conv, "weight"), (lin, "weight")], L1Unstructured, amount=0.3)
        // and prune.l1_unstructured(lin, "weight", amount=0.45) on these weights prune exactly these flat indices.
        let (model, conv, lin) = prunable()
        let masks = model.pruneL1Unstructured(amount: 0.3, scope: .global)
        #expect(zeros(conv.weight) == [0, 2, 11, 13, 15, 22])
        #expect(zeros(lin.weight) == [1, 3, 5, 7, 14, 16, 18])
        #expect(abs(masks.sparsity - 13.0 / 44) < 1e-12)
        let (model2, _, lin2) = prunable()
        model2.pruneL1Unstructured(amount: 0.45, scope: .perLayer)
        #expect(zeros(lin2.weight) == [1, 3, 5, 7, 9, 12, 14, 16, 18])
    }

    @Test func fineTuningKeepsPrunedWeightsAtZero() throws {
        let x = Tensor.randn([32, 2, 3, 3], generator: Generator(seed: 4)), y = Tensor((0..<32).map { Int64($0 % 4) })
        let dls = DataLoaders(
            train: DataLoader(x, y, batchSize: 8, prefetch: 0), valid: DataLoader(x, y, batchSize: 8, prefetch: 0))
        let (_, conv, lin) = prunable()
        let model = Sequential(conv, Flatten(), Linear(12, 5), lin)
        let masks = model.pruneL1Unstructured(amount: 0.5)
        let before = conv.weight.value.floats
        let learn = Learner(model: model, dls: dls, lr: 1e-2, callbacks: [KeepPruned(masks)], progress: false)
        try learn.fit(2)
        #expect(conv.weight.value.floats != before)  // trained
        for (p, m) in masks.masks { #expect(zip(p.value.floats, m.floats).allSatisfy { $1 == 1 || $0 == 0 }) }
    }
}
