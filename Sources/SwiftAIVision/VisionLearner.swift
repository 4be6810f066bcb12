import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

/// Where pretrained torchvision weights are looked for: `$TORCH_HOME/hub/checkpoints`, by default
/// `~/.cache/torch/hub/checkpoints` (torchvision's own cache, e.g. `resnet34-b627a593.pth`), read from `env`.
public func torchvisionCheckpointDirectory(_ env: [String: String] = ProcessInfo.processInfo.environment) -> String {
    let torchHome = env["TORCH_HOME"] ?? ((env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/torch")
    return torchHome + "/hub/checkpoints"
}

/// The cached torchvision checkpoint of `arch` (`<arch>-<hash>.pth`), if there is one.
public func findPretrainedWeights(
    _ arch: ResNetArch,
    environment: [String: String] = ProcessInfo.processInfo.environment
) -> String? {
    let dir = torchvisionCheckpointDirectory(environment)
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return nil }
    return names.filter { $0.hasPrefix(arch.rawValue + "-") && ($0.hasSuffix(".pth") || $0.hasSuffix(".safetensors")) }
        .sorted().first.map { dir + "/" + $0 }
}

/// Reads a state dict from `.safetensors` or PyTorch's `.pth` (zip or legacy format; nothing is executed).
public func readStateDict(_ path: String) throws -> [String: Tensor] {
    path.hasSuffix(".safetensors") ? try Safetensors.read(path: path).tensors : try PyTorchWeights.read(path: path)
}

/// fastai's `vision_learner` for torchvision ResNets: the body (the ResNet cut before its pooling), a new head
/// for `nOut` classes (default `dls.c`), layer groups (stem…layer2, layer3…layer4, head) and, with pretrained
/// weights, the body frozen and imagenet `Normalize` added to the loaders when absent. `cut` counts torchvision's
/// top-level children kept in the body (fastai's `cut`: negative from the end; default -2 drops avgpool and fc).
///
/// Pretrained weights come from `weights` (a `.pth` or `.safetensors` state dict of the torchvision model, or a
/// vision learner's saved model, whose body is used), or
/// from torchvision's checkpoint cache when `pretrained` (see ``findPretrainedWeights(_:)``); with none the body
/// keeps torchvision's random initialisation and a note says so. Inputs with `nIn != 3` channels adapt the
/// first convolution's pretrained weights as fastai (1 channel: summed; 2: the first two × 1.5; more: zeros added).
public func visionLearner(
    _ dls: DataLoaders, _ arch: ResNetArch, nOut: Int? = nil, pretrained: Bool = true, weights: String? = nil,
    lossFunc: Loss = CrossEntropyLoss(), metrics: [Metric] = [], cut: Int = -2, linFtrs: [Int] = [512],
    ps: Double = 0.5, concatPool: Bool = true, firstBn: Bool = true, bnFinal: Bool = false,
    yRange: (Double, Double)? = nil, normalize: Bool = true,
    nIn: Int = 3, lr: Double = 1e-3, progress: Bool = true, generator: Generator = .default,
    environment: [String: String] = ProcessInfo.processInfo.environment,
    note: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
) throws -> Learner {
    let n = nOut ?? dls.c
    guard n > 0 else { throw DataBlockError.invalid("visionLearner: the loaders have no vocab; pass nOut") }
    let net = arch.make(numClasses: 1000, inChannels: nIn, generator: generator)
    let file = weights ?? (pretrained ? findPretrainedWeights(arch, environment: environment) : nil)
    if let file {
        var sd = bodyAsTorchvision(try readStateDict(file))
        if nIn != 3, let w = sd["conv1.weight"], w.rank == 4, w.shape[1] == 3 {
            sd["conv1.weight"] = adaptFirstLayer(w, nIn)
        }
        // the classifier is replaced by the head: any class count loads
        for (k, v) in net.fc.stateDict() { sd["fc." + k] = v }
        try net.load(stateDict: sd)
    } else if pretrained {
        note(
            "note: no pretrained \(arch.rawValue) weights in \(torchvisionCheckpointDirectory(environment)) "
                + "(or --weights FILE): training starts from random initialisation")
    }
    let spec = VisionModelSpec(
        arch: arch, nIn: nIn, nOut: n, cut: cut, linFtrs: linFtrs, ps: ps, concatPool: concatPool,
        firstBn: firstBn, bnFinal: bnFinal, yRange: yRange)
    guard (1...ResNet.bodyNames.count).contains(spec.keptChildren) else {
        throw DataBlockError.invalid(
            "visionLearner: cut \(cut) must keep 1…\(ResNet.bodyNames.count) of \(arch.rawValue)'s 10 children")
    }
    let model = spec.make(from: net, generator: generator)
    let body = model[0] as! Sequential, head = model[1] as! Sequential, kept = spec.keptChildren
    let usesPretrained = file != nil
    if normalize && usesPretrained && nIn == 3 {
        for dl in [dls.train, dls.valid] where !dl.batchTransforms.transforms.contains(where: { $0 is Normalize }) {
            dl.addBatchTransforms([Normalize.imagenet])
        }
    }
    let learn = Learner(model: model, dls: dls, lossFunc: lossFunc, lr: lr, metrics: metrics, progress: progress)
    learn.modelSpec = .vision(spec)
    learn.splitter = { _ in
        [body[0..<min(6, kept)].parameters(), body[min(6, kept)..<kept].parameters(), head.parameters()]
    }
    if usesPretrained { learn.freeze() }
    return learn
}

/// A state dict saved from a vision learner (`0.<i>.…` body, `1.…` head — e.g. `swiftai train`'s model.safetensors)
/// becomes its body under torchvision's names, so a model trained here can be fine-tuned elsewhere as torchvision
/// weights are; any other state dict is returned as is.
func bodyAsTorchvision(_ sd: [String: Tensor]) -> [String: Tensor] {
    guard !sd.isEmpty, sd.keys.allSatisfy({ $0.hasPrefix("0.") || $0.hasPrefix("1.") }) else { return sd }
    var out = [String: Tensor]()
    for (key, value) in sd where key.hasPrefix("0.") {
        let parts = key.dropFirst(2).split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let i = Int(parts[0]), ResNet.bodyNames.indices.contains(i) else { return sd }
        out[ResNet.bodyNames[i] + "." + parts[1]] = value
    }
    return out
}

/// fastai's `_update_first_layer` for pretrained weights `w [out, 3, k, k]` and `nIn` input channels.
func adaptFirstLayer(_ w: Tensor, _ nIn: Int) -> Tensor {
    switch nIn {
    case 1: return w.sum(dim: 1, keepDim: true)
    case 2: return w[.all, 0..<2] * 1.5
    default:
        let extra = Tensor.zeros([w.shape[0], nIn - 3, w.shape[2], w.shape[3]], dtype: w.dtype)
        return Tensor.cat([w, extra], dim: 1)
    }
}

extension Learner {
    /// fastai's `predict` for one image: the validation item transforms and batch transforms, the model in
    /// evaluation mode, the loss's activation; returns the label, its index and every class's probability.
    public func predict(_ image: Image) throws -> (label: String, index: Int, probabilities: [Double]) {
        let dl = dls.valid
        let itemTfms = (dl.dataset as? ImageDataset)?.itemTfms ?? (dls.train.dataset as? ImageDataset)?.itemTfms ?? []
        let img = itemTfms.reduce(image) { $1.apply($0, generator: Generator(seed: 0), training: false) }
        let x = try collate([img])
        let batch = dl.batchTransforms.apply((x, Tensor([Int64(0)])), generator: Generator(seed: 0), training: false)
        let wasTraining = model.training
        model.eval()
        defer { model.train(wasTraining) }
        let probs = noGrad { lossFunc.activation(model(batch.x)) }.doubles
        let best = probs.indices.max { probs[$0] < probs[$1] } ?? 0
        return (best < dls.vocab.count ? dls.vocab[best] : String(best), best, probs)
    }

    /// ``predict(_:)`` for an image file.
    public func predict(path: String) throws -> (label: String, index: Int, probabilities: [Double]) {
        let mode: ImageMode = ((dls.valid.dataset as? ImageDataset)?.mode) ?? .rgb
        return try predict(Image.read(path, mode: mode))
    }
}
