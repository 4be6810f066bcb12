import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAITestSupport
@testable import SwiftAIVision

@Suite(.serialized) struct VisionLearnerTests {
    func loaders(_ root: Path) throws -> DataLoaders {
        try ImageDataLoaders.fromNameRe(
            root / "images", fnames: try getImageFiles(root / "images"), pattern: petsRe, seed: 4,
            itemTfms: [Resize(40)], batchTfms: augTransforms(size: 32), bs: 4, numWorkers: 2)
    }

    @Test func headIsFastaisAndPretrainedWeightsFreezeTheBodyAndAddNormalize() throws {
        let root = try makePetsFolder(perLabel: 4)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        // "Pretrained" weights: a torchvision-named resnet18 state dict in a checkpoint folder.
        let home = try makeTemporaryDirectory("torch")
        try FileManager.default.createDirectory(atPath: home + "/hub/checkpoints", withIntermediateDirectories: true)
        let donor = ResNet.resnet18(numClasses: 7, generator: Generator(seed: 9))  // any classifier size loads
        try Safetensors.write(donor.stateDict(), to: home + "/hub/checkpoints/resnet18-test.safetensors")
        let env = ["TORCH_HOME": home]  // not setenv: tests run in parallel
        let found = findPretrainedWeights(.resnet18, environment: env)
        #expect(found == home + "/hub/checkpoints/resnet18-test.safetensors")

        let dls = try loaders(root)
        let learn = try visionLearner(dls, .resnet18, metrics: [.accuracy], progress: false, environment: env)
        let model = try #require(learn.model as? Sequential)
        let head = try #require(model[1] as? Sequential)
        #expect(
            head.layers.map { String(describing: type(of: $0)) } == [
                "AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout",
                "Linear"
            ])
        #expect((head[4] as! Linear).weight.shape == [512, 1024] && (head[8] as! Linear).weight.shape == [3, 512])
        #expect((head[3] as! Dropout).p == 0.25 && (head[7] as! Dropout).p == 0.5 && (head[8] as! Linear).bias == nil)
        // The body carries the donor's weights under fastai's names (0.0 = conv1, 0.4 = layer1, …).
        #expect(
            model.stateDict()["0.4.0.conv1.weight"]!.doubles == donor.layer1[0].stateDict()["conv1.weight"]!.doubles)
        #expect(learn.layerGroups.count == 3)
        let frozen = learn.layerGroups[0].filter { !$0.requiresGrad }.count
        #expect(frozen > 0 && learn.layerGroups[2].allSatisfy { $0.requiresGrad })
        #expect(dls.train.batchTransforms.transforms.contains { $0 is Normalize })
        try learn.fineTune(1, freezeEpochs: 1)
        #expect(learn.model.parameters().allSatisfy { $0.requiresGrad } && learn.recorder.values.count == 1)

        // predict: the label of the most probable class and every probability.
        let p = try learn.predict(
            path: dls.valid.dataset is ImageDataset ? (dls.valid.dataset as! ImageDataset).items[0].string : "")
        #expect(
            p.probabilities.count == 3 && abs(p.probabilities.reduce(0, +) - 1) < 1e-5 && dls.vocab[p.index] == p.label)
        // TTA: beta 1 is the plain pass; beta nil the augmented mean; the default lies between.
        let plain = try learn.getPreds().preds
        let one = try learn.tta(n: 2, beta: 1).preds
        #expect(closeness(one, plain, rtol: 1e-5, atol: 1e-6).ok)
        let aug = try learn.tta(n: 2, beta: nil).preds, mixed = try learn.tta(n: 2).preds
        #expect(closeness(mixed, aug * 0.75 + plain * 0.25, rtol: 1e-4, atol: 1e-5).ok)
        let (ens, _) = try ensemblePreds([learn, learn])
        #expect(closeness(ens, plain, rtol: 1e-5, atol: 1e-6).ok)
    }

    @Test func withoutWeightsTrainingStartsFromRandomInitAndSaysSo() throws {
        let root = try makePetsFolder(perLabel: 2)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let env = ["TORCH_HOME": "/nonexistent-torch-home"]
        var notes: [String] = []
        let dls = try loaders(root)
        let learn = try visionLearner(dls, .resnet18, progress: false, environment: env) { notes.append($0) }
        #expect(notes.count == 1 && notes[0].contains("random initialisation"))
        #expect(learn.model.parameters().allSatisfy { $0.requiresGrad })
        #expect(!dls.train.batchTransforms.transforms.contains { $0 is Normalize })
        // Weights of another architecture: a typed error, nothing loaded.
        let other = try makeTemporaryDirectory() + "/r34.safetensors"
        try Safetensors.write(ResNet.resnet34().stateDict(), to: other)
        #expect(throws: (any Error).self) { try visionLearner(dls, .resnet18, weights: other, progress: false) }
    }

    @Test func aLearnersSavedModelPretrainsAnotherLearnersBody() throws {
        let root = try makePetsFolder(perLabel: 2)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let dls = try loaders(root)
        let first = try visionLearner(dls, .resnet18, pretrained: false, progress: false, generator: Generator(seed: 1))
        { _ in }
        let file = try makeTemporaryDirectory() + "/model.safetensors"
        try Safetensors.write(first.model.stateDict(), to: file)
        // Another class count: the body loads under torchvision's names, the new head keeps its own init; frozen.
        let second = try visionLearner(
            dls, .resnet18, nOut: 5, weights: file, progress: false, generator: Generator(seed: 2))
        let a = first.model.stateDict(), b = second.model.stateDict()
        #expect(
            b["0.0.weight"]!.doubles == a["0.0.weight"]!.doubles
                && b["0.7.1.bn2.running_var"]!.doubles == a["0.7.1.bn2.running_var"]!.doubles)
        #expect(b["1.8.weight"]!.shape == [5, 512] && second.layerGroups[0].contains { !$0.requiresGrad })
        // A learner saved from another architecture: a typed error naming a key.
        let other = try visionLearner(dls, .resnet34, pretrained: false, progress: false) { _ in }
        try Safetensors.write(other.model.stateDict(), to: file)
        #expect(throws: (any Error).self) { try visionLearner(dls, .resnet18, weights: file, progress: false) }
    }

    @Test func cutAndYRangeShapeTheHeadAsFastai() throws {
        let root = try makePetsFolder(perLabel: 2)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let dls = try loaders(root)
        // fastai: create_body(resnet18, cut=-3) ends at layer3 (256 channels); y_range appends SigmoidRange.
        let learn = try visionLearner(dls, .resnet18, pretrained: false, cut: -3, yRange: (-1, 2), progress: false) {
            _ in
        }
        let model = try #require(learn.model as? Sequential)
        let body = try #require(model[0] as? Sequential), head = try #require(model[1] as? Sequential)
        #expect(body.layers.count == 7 && (head[2] as! BatchNorm1d).weight!.shape == [512] && head[-1] is SigmoidRange)
        let x = Tensor.randn([2, 3, 32, 32])
        learn.model.eval()
        let y = noGrad { learn.model(x) }.doubles
        #expect(y.count == 6 && y.allSatisfy { $0 > -1 && $0 < 2 })
        #expect(learn.layerGroups.count == 3 && learn.layerGroups[1].count == 15)  // layer3: two blocks + downsample
        #expect(throws: (any Error).self) {
            try visionLearner(dls, .resnet18, pretrained: false, cut: 9, progress: false) { _ in }
        }
    }
}
