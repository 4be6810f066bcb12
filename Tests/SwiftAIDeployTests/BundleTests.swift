import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIVision
import SwiftAITestSupport

/// Random-pixel images of assorted sizes.
private func images(_ n: Int, channels: Int, seed: UInt64) -> [Image] {
    let g = Generator(seed: seed)
    return (0..<n).map { i in
        let w = 30 + 7 * i, h = 26 + 5 * i
        return Image(
            width: w, height: h, channels: channels,
            pixels: (0..<(w * h * channels)).map { _ in UInt8(g.nextInt(in: 0..<256)) })
    }
}

private let vocab = ["cat", "dog", "emu"]
private let pipeline = InferencePipeline(
    mode: .rgb, itemTransforms: [Resize(40, method: .squish)],
    batchTransforms: [
        IntToFloat(), AffineCoordTransform(flip: (.horizontal, 0.5), size: (32, 32)),
        Lighting(), Normalize.imagenet
    ],
    vocab: vocab)

/// A resnet18 vision learner (random weights, non-trivial BatchNorm statistics) on loaders carrying `pipeline`.
private func visionLearnerForExport() throws -> Learner {
    let learn = try visionLearner(
        pipeline.dataLoaders(), .resnet18, pretrained: false, generator: Generator(seed: 11), note: { _ in })
    randomiseBatchNorms(learn.model, seed: 3)
    learn.model.eval()
    return learn
}

/// The model's probabilities for `imgs` through `p`, computed directly.
private func directProbabilities(_ model: Module, _ p: InferencePipeline, _ imgs: [Image]) throws -> Tensor {
    model.eval()
    return noGrad { model(try! p.batch(imgs)).softmax(dim: -1) }
}

@Suite struct BundleTests {
    @Test func visionLearnerRoundTripsThroughOneFile() throws {
        let dir = try makeTemporaryDirectory()
        let learn = try visionLearnerForExport()
        let path = dir + "/model.safetensors"
        try learn.export(to: path)
        let file = try Safetensors.read(path: path)
        #expect(Set(file.tensors.keys) == Set(learn.model.stateDict().keys))
        #expect(file.metadata["format"] == "swiftai-learner" && file.metadata["input_size"] == "[3,32,32]")
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        let imgs = images(3, channels: 3, seed: 1)
        let want = try directProbabilities(learn.model, pipeline, imgs)
        for fused in [true, false] {
            let loaded = try loadLearner(path, fused: fused)
            #expect(loaded.dls.vocab == vocab)
            let got = try loaded.getPreds(try InferencePipeline(loaded.dls).testDL(images: imgs)).preds
            expectClose(got, want, rtol: 1e-4, atol: 1e-5, "fused \(fused)")
            let one = try loaded.predict(imgs[1])
            #expect(one.label == vocab[one.index])
            expectClose(Tensor(one.probabilities), want[1].to(.float64), rtol: 1e-4, atol: 1e-5, "predict")
        }
    }

    @Test func torchvisionNamesAndShapesAreTorchvisions() throws {
        // torchvision's own resnet18 state dict (names and shapes), recorded by scripts/make_resnet_fixtures.py.
        let meta = try Safetensors.read(path: committedFixture("SwiftAINNTests", "tv_basic.safetensors")).metadata
        var torchvision: [String: [Int]] = [:]
        for key in ["resnet18.parameters", "resnet18.buffers"] {
            let list = try #require(JSONSerialization.jsonObject(with: Data(meta[key]!.utf8)) as? [[Any]])
            for entry in list { torchvision[entry[0] as! String] = entry[1] as? [Int] }
        }
        let spec = ModelSpec.resnet(.resnet18, nIn: 3, nOut: 1000)
        let learn = Learner(
            model: spec.make(generator: Generator(seed: 1)),
            dls: InferencePipeline(
                mode: .rgb, itemTransforms: [], batchTransforms: [IntToFloat()],
                vocab: (0..<1000).map { "c\($0)" }
            ).dataLoaders())
        learn.modelSpec = spec
        let path = try makeTemporaryDirectory() + "/r18.safetensors"
        try learn.export(to: path)
        let ours = try Safetensors.read(path: path).tensors.mapValues(\.shape)
        #expect(ours == torchvision)
    }

    @Test func bodyParameterCountsAreTheBuiltBodies() {
        for (arch, nIn) in [(ResNetArch.resnet18, 3), (.resnet50, 1)] {
            let net = Init.skipping { arch.make(inChannels: nIn) }
            #expect(net.body.parameterCount == arch.bodyParameterCount(nIn: nIn), "\(arch) nIn \(nIn)")
        }
    }

    @Test func lessonModelWithFashionMNISTPipeline() throws {
        let dls = InferencePipeline.fashionMNIST(augment: [RandomCrop(padding: 1), RandomFlip()]).dataLoaders()
        let learn = Learner(model: FashionMNISTModel.cnn.make(generator: Generator(seed: 2)), dls: dls)
        learn.modelSpec = .lesson(.cnn)
        randomiseBatchNorms(learn.model, seed: 5)
        let path = try makeTemporaryDirectory() + "/cnn.safetensors"
        try learn.export(to: path, pipeline: .fashionMNIST(augment: [RandomCrop(padding: 1), RandomFlip()]))
        let loaded = try loadLearner(path)
        let p = try InferencePipeline(loaded.dls)
        // augmentations after normalising, as in training
        #expect(p.batchTransforms.map(\.order) == [10, 99, 100, 100])
        // The pipeline of a 28×28 gray image is the lesson's normalisation.
        let small = Image(width: 28, height: 28, channels: 1, pixels: (0..<784).map { UInt8(($0 * 37) % 256) })
        let x = try p.batch([small])
        let want = (Tensor(small.pixels.map { Float($0) }, shape: [1, 1, 28, 28]) / 255 - 0.28) / 0.35
        expectClose(x.contiguous(), want, rtol: 1e-5, atol: 1e-5, "normalisation")
        expectClose(
            try loaded.getPreds(p.testDL(images: [small])).preds, try directProbabilities(learn.model, p, [small]),
            rtol: 1e-4, atol: 1e-5, "cnn")
    }

    @Test func channelPrunedModelRoundTripsThroughTheSameLoader() throws {
        let dir = try makeTemporaryDirectory()
        let learn = Learner(
            model: FashionMNISTModel.wide.make(generator: Generator(seed: 3)),
            dls: InferencePipeline.fashionMNIST().dataLoaders())
        learn.modelSpec = .lesson(.wide)
        randomiseBatchNorms(learn.model, seed: 4)
        try learn.export(to: dir + "/full.safetensors", pipeline: .fashionMNIST())
        try learn.pruneChannels(amount: 0.5)
        #expect(
            learn.modelSpec?.widths == [
                "0.0": 8, "1.convs.0.0": 16, "2.convs.0.0": 32, "3.convs.0.0": 64, "4.convs.0.0": 128
            ])
        try learn.export(to: dir + "/pruned.safetensors", pipeline: .fashionMNIST())
        let bundle = try ExportBundle(path: dir + "/pruned.safetensors")
        #expect(bundle.spec == learn.modelSpec)
        let x = Tensor.randn([3, 1, 28, 28], generator: Generator(seed: 5))
        learn.model.eval()
        bundle.model.eval()
        expectClose(bundle.model(x), learn.model(x), rtol: 1e-6, atol: 1e-6, "bundle model")
        expectClose(
            try loadLearner(dir + "/pruned.safetensors").model(x), learn.model(x), rtol: 1e-4, atol: 1e-4, "fused")
        let size = { (name: String) in try FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as! Int
        }
        #expect(try Double(size("pruned.safetensors")) < 0.6 * Double(size("full.safetensors")))
    }

    @Test func halfPrecisionBundlesAreHalfTheSizeAndAgree() throws {
        let dir = try makeTemporaryDirectory()
        let learn = try visionLearnerForExport()
        try learn.export(to: dir + "/f32.safetensors")
        let imgs = images(6, channels: 3, seed: 9)
        let full = try directProbabilities(learn.model, pipeline, imgs)
        let size32 = try FileManager.default.attributesOfItem(atPath: dir + "/f32.safetensors")[.size] as! Int
        for dt in [ExportDType.float16, .bfloat16] {
            let path = dir + "/\(dt.rawValue).safetensors"
            try learn.export(to: path, dtype: dt)
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
            #expect(Double(size) / Double(size32) < 0.51, "\(dt): \(size) of \(size32) bytes")
            let loaded = try loadLearner(path)
            let preds = try loaded.getPreds(try InferencePipeline(loaded.dls).testDL(images: imgs)).preds
            #expect(preds.argmax(dim: 1).doubles == full.argmax(dim: 1).doubles, "\(dt) top-1")
            expectClose(preds, full, rtol: 0, atol: dt == .float16 ? 2e-2 : 5e-2, "\(dt)")
        }
    }

    @Test func learnersThatCannotBeDescribedAreRefused() throws {
        let learn = Learner(model: Sequential(Flatten(), Linear(4, 3)), dls: pipeline.dataLoaders())
        #expect(throws: BundleError.self) { try learn.export(to: try makeTemporaryDirectory() + "/x.safetensors") }
        let described = try visionLearnerForExport()
        let fused = Learner(model: described.model.fusedForInference(), dls: described.dls)
        fused.modelSpec = described.modelSpec
        #expect(throws: BundleError.self) { try fused.export(to: try makeTemporaryDirectory() + "/y.safetensors") }
        let closure = InferencePipeline(
            mode: .rgb, itemTransforms: [], batchTransforms: [BatchFunction { $0 }], vocab: vocab)
        #expect(throws: BundleError.self) {
            try described.export(to: try makeTemporaryDirectory() + "/z.safetensors", pipeline: closure)
        }
    }
}
