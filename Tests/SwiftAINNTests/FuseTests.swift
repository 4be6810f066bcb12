import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

/// The fused model's outputs against the model's own in evaluation mode, at a small and a ≥16 batch (which takes
/// the per-position GEMM path on small maps).
private func expectFusedMatches(
    _ model: Module, input: [Int], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    randomiseBatchNorms(model, seed: 7)
    model.eval()
    let fused = model.fusedForInference()
    for n in [2, 16] {
        let x = randn([n] + input, seed: UInt64(n)).to(.float32)
        let (want, got) = noGrad { (model(x), fused(x)) }
        expectClose(got, want, rtol: 1e-4, atol: 1e-4, "\(what) batch \(n)", sourceLocation: sourceLocation)
    }
}

@Suite struct FuseTests {
    @Test func fusedTorchvisionResNetsMatchEvaluationMode() {
        let g = Generator(seed: 1)
        expectFusedMatches(
            ResNet(block: .basic, layers: [1, 1, 1, 1], numClasses: 10, generator: g), input: [3, 48, 48], "basic")
        expectFusedMatches(
            ResNet(block: .bottleneck, layers: [1, 1, 1, 1], numClasses: 5, groups: 2, widthPerGroup: 8, generator: g),
            input: [3, 40, 40], "bottleneck, grouped")
    }

    @Test func fusedResNetHasNoBatchNormOrActivationLeft() {
        let model = ResNet(block: .basic, layers: [2, 1, 1, 1], numClasses: 10, generator: Generator(seed: 2))
        let fusedModel = model.fusedForInference()
        let fused = fusedModel.modules()
        #expect(!fused.contains { $0 is BatchNorm2d || $0 is ReLU })
        // 1 stem + 5 blocks × 2 + 3 downsample convolutions.
        #expect(fused.filter { $0 is FusedConv2d }.count == 14)
        #expect(
            fused.compactMap { ($0 as? FusedConv2d)?.conv.epilogue }.filter { $0 == [.addResidual, .leakyRelu(0)] }
                .count == 5)
        // only the linear layer `fc` is left unfused
        #expect(fusedModel.parameters().map(\.shape) == [[10, 512], [10]])
    }

    @Test func fusedLessonModelsMatchEvaluationMode() {
        for kind in FashionMNISTModel.allCases {
            expectFusedMatches(kind.make(generator: Generator(seed: 3)), input: [1, 28, 28], kind.rawValue)
        }
    }

    @Test func generalReluWithACapAndTheVisionHeadFuse() {
        let g = Generator(seed: 4)
        let model = Sequential(
            conv(
                3, 8, stride: 1, act: { GeneralRelu(leak: 0.1, sub: 0.4, maxv: 0.5) }, norm: { BatchNorm2d($0) },
                generator: g),
            ResBlock(8, 16, stride: 2, act: { LeakyReLU(0.2) }, generator: g),
            AdaptiveConcatPool2d(), Flatten(), BatchNorm1d(32), Dropout(0.5), Linear(32, 4, generator: g))
        expectFusedMatches(model, input: [3, 12, 12], "GeneralRelu(maxv) + LeakyReLU ResBlock + head")
        let convs = model.fusedForInference().modules().compactMap { $0 as? FusedConv2d }
        #expect(convs.first.map { $0.conv.epilogue } == [ConvEpilogue.leakyRelu(0.1), .add(-0.4), .clampMax(0.5)])
        #expect(!model.fusedForInference().modules().contains { $0 is Dropout })
    }

    @Test func unfusableNeighboursStayAsTheyWere() {
        let g = Generator(seed: 5)
        // A Sigmoid cannot be a oneDNN post-op here, and a BatchNorm without running statistics cannot be folded.
        let model = Sequential(
            Conv2d(2, 4, kernelSize: 3, padding: 1, generator: g), BatchNorm2d(4, trackRunningStats: false),
            Sigmoid(), Conv2d(4, 3, kernelSize: 1, generator: g), Sigmoid())
        expectFusedMatches(model, input: [2, 5, 5], "unfusable")
        let kinds = model.fusedForInference().modules().dropFirst().map { String(describing: type(of: $0)) }
        #expect(kinds == ["FusedConv2d", "BatchNorm2d", "Sigmoid", "FusedConv2d", "Sigmoid"])
    }
}
