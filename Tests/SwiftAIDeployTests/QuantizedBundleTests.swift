import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIVision
import SwiftAITestSupport

private let pipeline = InferencePipeline(
    mode: .rgb, itemTransforms: [Resize(40, method: .squish)],
    batchTransforms: [IntToFloat(), Normalize.imagenet], vocab: ["cat", "dog", "emu"])

/// Random-pixel images.
private func images(_ n: Int, seed: UInt64) -> [Image] {
    let g = Generator(seed: seed)
    return (0..<n).map { _ in
        Image(width: 40, height: 40, channels: 3, pixels: (0..<4800).map { _ in UInt8(g.nextInt(in: 0..<256)) })
    }
}

/// A resnet18 vision learner with random weights and BatchNorm statistics, in evaluation mode.
private func learner() throws -> Learner {
    let learn = try visionLearner(
        pipeline.dataLoaders(), .resnet18, pretrained: false, generator: Generator(seed: 5), note: { _ in })
    randomiseBatchNorms(learn.model, seed: 4)
    learn.model.eval()
    return learn
}

@Suite struct QuantizedBundleTests {
    @Test func int8VisionLearnerTracksFloatAndRoundTripsThroughTheBundle() throws {
        let learn = try learner()
        let calib = try pipeline.testDL(images: images(8, seed: 1), batchSize: 4)
        let q = try learn.quantized(calibration: calib, batches: 2, observer: .minMax, inputShape: [3, 40, 40])
        let report = (q.model as! QuantizedModel).report
        // Every convolution of the body and both linear layers of the head run in int8; the head's BatchNorm1d do not.
        #expect(report.quantized.count == 20 + 2)
        #expect(report.float.map(\.name) == ["1.2", "1.6"])
        let test = try pipeline.testDL(images: images(6, seed: 2), batchSize: 6)
        let want = try learn.getPreds(test).preds, got = try q.getPreds(test).preds
        let dot = (want * got).sum().item(),
            norms = ((want * want).sum().item() * (got * got).sum().item()).squareRoot()
        #expect(dot / norms > 0.99)
        let dir = try makeTemporaryDirectory()
        try learn.export(to: dir + "/f32.safetensors")
        try q.export(to: dir + "/int8.safetensors")
        let size = { (p: String) in try FileManager.default.attributesOfItem(atPath: dir + p)[.size] as! Int }
        #expect(Double(try size("/int8.safetensors")) < 0.3 * Double(try size("/f32.safetensors")))
        let meta = try Safetensors.read(path: dir + "/int8.safetensors").metadata
        #expect(
            meta["dtype"] == "int8"
                && meta["quantization"] == "{\"qmax\":\(Quantization.activationQMax),\"scheme\":\"static\"}")
        let loaded = try loadLearner(dir + "/int8.safetensors")
        #expect(loaded.model is QuantizedModel)
        expectClose(try loaded.getPreds(test).preds, got, rtol: 0, atol: 0, "reloaded int8")
        // On a CPU without VNNI an 8-bit bundle's layers compute in float32 on its codes, with the same predictions.
        let narrow = try ExportBundle(path: dir + "/int8.safetensors", int8KernelQMax: 127)
        let narrowModel = try #require(narrow.model as? QuantizedModel)
        let convs = narrowModel.body.modules().compactMap { $0 as? QuantizedConv2d }
        #expect(narrowModel.qmax == Quantization.activationQMax)
        #expect(convs.allSatisfy { $0.conv.runsInFloat == (Quantization.activationQMax > 127) })
        var batches = test.makeIterator()
        let batch = try #require(batches.next()).x
        let (a, b) = noGrad { (narrowModel(batch), q.model(batch)) }
        #expect(a.argmax(dim: 1).scalars(as: Int64.self) == b.argmax(dim: 1).scalars(as: Int64.self))
        // A float model cannot be written as int8, and a bundle with a corrupt zero point is refused.
        #expect(throws: BundleError.self) { try learn.export(to: dir + "/bad.safetensors", dtype: .int8) }
        var file = try Safetensors.read(path: dir + "/int8.safetensors")
        file.tensors["0.0.zero_point"] = Tensor([Int64(-3)], shape: [1])
        try Safetensors.write(file.tensors, metadata: file.metadata, to: dir + "/corrupt.safetensors")
        #expect(throws: BundleError.self) { try loadLearner(dir + "/corrupt.safetensors") }
    }

    @Test func calibrationWithTheWrongChannelsOrSizeIsRefusedBeforeAnyWork() throws {
        let learn = try learner()
        let gray = InferencePipeline(
            mode: .gray, itemTransforms: [Resize(40, method: .squish)], batchTransforms: [IntToFloat()],
            vocab: pipeline.vocab)
        let dl = try gray.testDL(images: images(4, seed: 3), batchSize: 4)
        #expect(throws: CompressionError.self) { try learn.quantized(calibration: dl, batches: 1) }
        let dl3 = try pipeline.testDL(images: images(4, seed: 3), batchSize: 4)
        #expect(
            throws: CompressionError.calibration(
                "the calibration images are [3, 40, 40] but the model takes [3, 64, 64] inputs")
        ) {
            try learn.quantized(calibration: dl3, batches: 1, inputShape: [3, 64, 64])
        }
    }
}
