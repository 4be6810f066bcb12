import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAIVision

/// A model to train: one of the lesson's Fashion-MNIST models or a torchvision ResNet.
enum Arch: ExpressibleByArgument, CustomStringConvertible {
    case lesson(FashionMNISTModel)
    case torchvision(ResNetArch)

    init?(argument: String) {
        if let m = FashionMNISTModel(rawValue: argument) { self = .lesson(m) } else if let r = ResNetArch(rawValue: argument) {
            self = .torchvision(r)
        } else { return nil }
    }

    var description: String {
        switch self {
        case let .lesson(m): return m.rawValue
        case let .torchvision(r): return r.rawValue
        }
    }

    static var allValueStrings: [String] { FashionMNISTModel.allCases.map(\.rawValue) + ResNetArch.allCases.map(\.rawValue) }

    /// Default batch size, peak learning rate and weight decay of `swiftai train` (torchvision: fastai's
    /// `fit_one_cycle` default lr 1e-3; `fineTune` uses its own base lr 2e-3).
    var trainDefaults: (bs: Int, lr: Double, wd: Double) {
        switch self {
        case let .lesson(m): return m.trainDefaults
        case .torchvision: return (64, 1e-3, 0.01)
        }
    }
}

/// A learning rate from the command line: `1e-3`, or `1e-5:1e-3` for `slice(1e-5, 1e-3)` across layer groups.
extension LearningRate: ExpressibleByArgument {
    public init?(argument: String) {
        let parts = argument.split(separator: ":").map { Double($0) }
        guard !parts.isEmpty, parts.count <= 2, parts.allSatisfy({ $0 != nil && $0! > 0 }) else { return nil }
        self = parts.count == 1 ? LearningRate(parts[0]!) : .slice(parts[0]!, parts[1]!)
    }
}

/// Options shared by `train`, `lr-find` and `summary`.
struct RecipeOptions: ParsableArguments {
    @Option(name: [.customLong("arch"), .customLong("model")],
            help: "Architecture: cnn, resnet, wide (the lesson's, Fashion-MNIST tensors) or resnet18…resnet152 (torchvision).")
    var arch: Arch = .lesson(.resnet)
    @OptionGroup var folder: ImageFolderOptions
    @Option(help: "Fashion-MNIST IDX folder when no --data is given (default: FMNIST_DIR or /usr/share/datasets/fashion-mnist).")
    var fmnist: String?
    @Option(help: "Pretrained weights for a torchvision arch (.pth or .safetensors); default: torchvision's checkpoint cache.")
    var weights: String?
    @Flag(help: "Start a torchvision arch from random weights even when a checkpoint is cached.") var noPretrained = false
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?
    @Option(help: "Stop each training epoch after this many batches (quick runs).") var limitBatches: Int?
    @Flag(help: "Fashion-MNIST: random crop (padding 1) and horizontal flip of training batches (folders always use augTransforms).")
    var aug = false
    @Option(help: "Label smoothing of the cross-entropy loss.") var labelSmoothing = 0.0
    @Option(help: "Weight decay (decoupled, AdamW; default 0.01, 0.1 for cnn).") var wd: Double?

    /// How images become the model's input, for the export bundle: the folder's own pipeline, or Fashion-MNIST's.
    var inferencePipeline: InferencePipeline? {
        folder.data != nil ? nil : .fashionMNIST(augment: aug ? [RandomCrop(padding: 1), RandomFlip()] : [])
    }

    var batchSize: Int { folder.bs ?? (folder.data == nil ? arch.trainDefaults.bs : 64) }
    var weightDecay: Double { wd ?? arch.trainDefaults.wd }
    var seed: UInt64 { folder.seed }

    func validate() throws {
        if folder.data != nil, case .lesson = arch {
            throw ValidationError("the lesson's models (cnn, resnet, wide) take Fashion-MNIST tensors; use --arch resnet18…resnet152 with --data")
        }
    }

    /// Loaders (an image folder, or Fashion-MNIST's tensors) and a learner for them; a missing dataset or bad
    /// folder prints what is wrong and exits 1.
    func prepare(lr: Double, callbacks: [Callback] = []) throws -> Learner {
        if let threads { Parallel.threadCount = threads }
        manualSeed(seed)
        do {
            let dls: DataLoaders
            if folder.data != nil {
                dls = try folder.dataloaders(bs: batchSize).1
            } else {
                dls = DataLoaders.fashionMNIST(try FashionMNIST(directory: fmnist), batchSize: batchSize, seed: seed,
                                               augment: aug ? [RandomCrop(padding: 1), RandomFlip()] : [])
            }
            dls.train.maxBatches = limitBatches
            let wd = weightDecay
            let loss = CrossEntropyLoss(labelSmoothing: labelSmoothing)
            let learn: Learner
            switch arch {
            case let .lesson(m):
                learn = Learner(model: m.make(generator: Generator(seed: seed)), dls: dls, lossFunc: loss, lr: lr, metrics: [.accuracy],
                                callbacks: callbacks)
                learn.modelSpec = .lesson(m)
            case let .torchvision(r):
                learn = try visionLearner(dls, r, pretrained: !noPretrained, weights: weights, lossFunc: loss, metrics: [.accuracy],
                                          nIn: folder.data == nil ? 1 : 3, lr: lr, generator: Generator(seed: seed))
                for cb in callbacks { learn.add(cb) }
            }
            learn.optFunc = { AdamW.fastai($0, lr: $1, wd: wd) }
            return learn
        } catch { throw fail(error) }
    }
}

extension FashionMNISTModel {
    /// Default batch size, peak learning rate and weight decay of `swiftai train`.
    ///
    /// resnet and wide follow the lesson (bs 1024, lr 2e-2, AdamW's wd 0.01; wide is run with `--lr 1e-2`). The
    /// small cnn was chosen on a held-out split of the training set (BENCHMARKS.md, issue #4): at bs 1024 it needs
    /// more steps than 5 epochs give, and among ten bs/lr/wd recipes bs 32, lr 5e-3, wd 0.1 scored highest.
    var trainDefaults: (bs: Int, lr: Double, wd: Double) {
        self == .cnn ? (32, 5e-3, 0.1) : (1024, 2e-2, 0.01)
    }
}

/// Reports a learner error (e.g. the one-batch check) and exits 1.
func fail(_ error: Error) -> ExitCode {
    if let e = error as? ExitCode { return e }
    fflush(stdout)  // what was printed so far comes before the error when both go to one file
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode.failure
}

/// `--precision`: float32, or mixed precision (fastai's `to_bf16()` / `to_fp16()`).
enum TrainPrecision: String, ExpressibleByArgument, CaseIterable {
    case fp32, bf16, fp16

    /// The operand type it names.
    var dtype: DType {
        switch self {
        case .fp32: .float32
        case .bf16: .bfloat16
        case .fp16: .float16
        }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train on Fashion-MNIST (default) or an image folder (--data) with one-cycle AdamW, or fine-tune a torchvision ResNet.",
        discussion: "Prints the results table live, writes model.safetensors (an export bundle: `swiftai predict`, `evaluate`, `serve`), history.csv, loss.png and schedule.png (and for classes: confusion_matrix.png, most_confused.txt, top_losses.png) to --out, and ends with one JSON line.")
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Epochs of fit_one_cycle (or of the unfrozen phase with --fine-tune).") var epochs = 5
    @Option(help: "fastai's fine_tune: this many unfrozen epochs after --freeze-epochs with the body frozen.") var fineTune: Int?
    @Option(help: "Frozen epochs of --fine-tune.") var freezeEpochs = 1
    @Option(help: "Peak learning rate (default 2e-2 lesson models, 5e-3 cnn, 1e-3 torchvision; fine-tune's base lr 2e-3); A:B for slice(A, B).")
    var lr: LearningRate?
    @Flag(help: "Also report test-time augmentation's accuracy (fastai's tta: 4 augmented passes, beta 0.25).") var tta = false
    @Flag(help: "Also report the lesson's flip TTA: the mean of the plain and the mirrored predictions.") var ttaFlip = false
    @Option(help: "Output folder.") var out = "out"
    @Option(help: "Distil from this teacher (an export bundle taking the same inputs, e.g. `wide` for a `cnn` student).") var teacher: String?
    @Option(help: "Distillation temperature T.") var temperature = 4.0
    @Option(help: "Distillation weight α of the teacher's soft loss (1 − α on the labels).") var alpha = 0.5
    @Option(help: "Schedule and optimizer for the lesson's models: fastai (fit_one_cycle, AdamW mom 0.9/sqr 0.99/eps 1e-5) or pytorch (OneCycleLR, AdamW defaults), as the reference script.")
    var sched = "fastai"
    @Option(help: "Compute precision of convolutions and linear layers: fp32, bf16 or fp16 (mixed precision, float32 master weights; fp16 with loss scaling). Where the CPU has no native support, says so and stays fp32.")
    var precision: TrainPrecision = .fp32

    func validate() throws {
        guard ["fastai", "pytorch"].contains(sched) else { throw ValidationError("--sched must be fastai or pytorch") }
        guard temperature > 0, (0...1).contains(alpha) else { throw ValidationError("--temperature must be positive and --alpha in [0, 1]") }
        guard epochs > 0, (fineTune ?? 1) > 0, freezeEpochs >= 0, recipe.batchSize > 0, recipe.weightDecay >= 0 else {
            throw ValidationError("--epochs, --fine-tune and --bs must be positive, --freeze-epochs and --wd not negative")
        }
    }

    func run() throws {
        var distill: [Callback] = []
        if let teacher {
            do { distill = [Distillation(teacher: try loadLearner(teacher).model, temperature: temperature, alpha: alpha)] } catch { throw fail(error) }
        }
        let learn = try recipe.prepare(lr: lr?.stop ?? recipe.arch.trainDefaults.lr,
                                       callbacks: [TerminateOnNaN(), Interrupt(), CSVLogger(path: out + "/history.csv")] + distill)
        switch precision {
        case .fp32: break
        case .bf16: learn.toBF16()
        case .fp16: learn.toFP16()
        }
        let computed = learn.callback(MixedPrecision.self).map { $0.unavailable == nil ? $0.precision.rawValue : "float32" } ?? "float32"
        let dls = learn.dls
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var ttaAccuracy: Double?, flipAccuracy: Double?
        do {
            if let fineTune {
                try learn.fineTune(fineTune, baseLr: lr?.stop ?? 2e-3, freezeEpochs: freezeEpochs)
            } else if sched == "pytorch", case .lesson = recipe.arch {
                let wd = recipe.weightDecay, peak = lr?.stop ?? recipe.arch.trainDefaults.lr
                learn.optFunc = { m, lr in AdamW(m.parameters(), lr: lr, weightDecay: wd) }
                let (lrs, moms) = Schedule.oneCycleLR(maxLR: peak, totalSteps: epochs * dls.train.count)
                try learn.fit(epochs, lr: peak, callbacks: [ParamScheduler([(\.lr, lrs), (\.mom, moms)])])
            } else {
                try learn.fitOneCycle(epochs, lrMax: lr ?? LearningRate(recipe.arch.trainDefaults.lr))
            }
            // One validation pass serves the saved predictions (for `swiftai ensemble`) and the interpretation.
            let plain = try learn.getPreds(withLoss: true)
            var preds = ["preds": plain.preds, "targets": plain.targets]
            if tta {
                preds["tta_preds"] = try learn.tta().preds
                ttaAccuracy = Metric.accuracy.fn(preds["tta_preds"]!, preds["targets"]!)
            }
            if ttaFlip {
                preds["flip_preds"] = try learn.tta(n: 1, beta: 0.5, transforms: [RandomFlip(p: 1)]).preds
                flipAccuracy = Metric.accuracy.fn(preds["flip_preds"]!, preds["targets"]!)
            }
            try Safetensors.write(preds, metadata: ["vocab": dls.vocab.joined(separator: "\n")], to: out + "/preds.safetensors")
            try writeInterpretation(learn, plain)
        } catch {
            throw fail(error)
        }
        let rec = learn.recorder
        do { try learn.export(to: out + "/model.safetensors", pipeline: recipe.inferencePipeline) } catch { throw fail(error) }
        try rec.plotLoss(to: out + "/loss.png")
        try rec.plotSchedule(to: out + "/schedule.png")
        if let advice = rec.advice(classes: Swift.max(dls.c, 2), stopReason: learn.stopReason) { print(advice) }
        let accuracy = rec.last("accuracy") ?? .nan
        // The precision the convolutions really ran in, only when mixed precision was asked for (so fp32 rows keep
        // matching the PyTorch reference's in scripts/compare.py).
        print(jsonLine([("model", recipe.arch.description)] + (precision == .fp32 ? [] : [("precision", computed)]) + [
            ("epochs", rec.values.count), ("accuracy", Rounded(accuracy, 4)), ("error_rate", Rounded(1 - accuracy, 4)),
            ("valid_loss", Rounded(rec.last("valid_loss") ?? .nan, 4)), ("tta_accuracy", Rounded(ttaAccuracy ?? .nan, 4)),
            ("flip_tta_accuracy", Rounded(flipAccuracy ?? .nan, 4)), ("train_images_per_s", rec.trainItemsPerSecond),
        ] as [(String, Any)]))
    }

    /// confusion_matrix.png, most_confused.txt and (for image folders) top_losses.png in `--out`.
    func writeInterpretation(_ learn: Learner, _ r: (preds: Tensor, targets: Tensor, losses: Tensor)) throws {
        guard learn.dls.c > 0, learn.dls.valid.itemCount > 0 else { return }
        let interp = try ClassificationInterpretation(preds: r.preds, targets: r.targets, losses: r.losses, vocab: learn.dls.vocab,
                                                      dl: learn.dls.valid)
        try interp.plotConfusionMatrix(to: out + "/confusion_matrix.png")
        let lines = interp.mostConfused().map { "\($0.actual)\t\($0.predicted)\t\($0.count)" }
        try (["actual\tpredicted\tcount"] + lines).joined(separator: "\n").appending("\n")
            .write(toFile: out + "/most_confused.txt", atomically: true, encoding: .utf8)
        if learn.dls.valid.dataset is ImageDataset { try interp.plotTopLosses(9, to: out + "/top_losses.png") }
    }
}

struct Ensemble: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The lesson's ensemble: averages the validation probabilities saved by several `swiftai train` runs.",
        discussion: "Reads preds.safetensors from each folder; prints one JSON line with each run's and the ensemble's accuracy for every kind of prediction all runs saved (preds, tta_preds, flip_preds).")
    @Argument(help: "Output folders of `swiftai train` runs on the same validation set.") var runs: [String]

    func validate() throws {
        guard runs.count >= 2 else { throw ValidationError("give two or more run folders") }
    }

    func run() throws {
        var loaded = [[String: Tensor]]()
        for dir in runs {
            do { loaded.append(try Safetensors.read(path: dir + "/preds.safetensors").tensors) } catch {
                throw fail(ValidationError("\(dir): \(error) — was it written by `swiftai train` of this version?"))
            }
        }
        let targets = loaded[0]["targets"]!
        for (dir, p) in zip(runs, loaded) where p["targets"]?.shape != targets.shape || p["targets"]!.floats != targets.floats {
            throw fail(ValidationError("\(dir) was validated on other items than \(runs[0]); an ensemble needs the same validation set"))
        }
        var fields: [(String, Any)] = [("runs", runs.count)]
        for key in ["preds", "tta_preds", "flip_preds"] where loaded.allSatisfy({ $0[key] != nil }) {
            let each = loaded.map { Rounded(Metric.accuracy.fn($0[key]!, targets), 4) }
            let mean = loaded.dropFirst().reduce(loaded[0][key]!) { $0 + $1[key]! } / Double(loaded.count)
            fields += [(key + "_each", each), (key + "_ensemble", Rounded(Metric.accuracy.fn(mean, targets), 4))]
        }
        print(jsonLine(fields))
    }
}

struct LRFind: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lr-find",
        abstract: "fastai's learning-rate finder; writes lr_find.png and ends with the suggestions as JSON.")
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Output folder.") var out = "out"
    @Option(help: "Iterations.") var numIt = 100

    func run() throws {
        let learn = try recipe.prepare(lr: 1e-3)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let s: SuggestedLRs
        do { s = try learn.lrFind(numIt: numIt) } catch { throw fail(error) }
        try s.plot(to: out + "/lr_find.png")
        print(String(format: "minimum %.2e  steep %.2e  valley %.2e  slide %.2e (plot: %@)", s.minimum, s.steep, s.valley, s.slide,
                     out + "/lr_find.png"))
        print(jsonLine(["minimum": Scientific(s.minimum), "steep": Scientific(s.steep), "valley": Scientific(s.valley),
                        "slide": Scientific(s.slide)]))
    }
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Model summary: module, output shapes, parameters, MFLOPs. A torchvision arch without --data is summarised as torchvision builds it.")
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Classes of a torchvision arch summarised on its own (torchvision's default 1000).") var nOut = 1000

    func run() throws {
        let learn: Learner
        if case let .torchvision(r) = recipe.arch, recipe.folder.data == nil {
            // torchvision's model itself, on a batch of two random images of --size.
            let s = recipe.folder.size
            let x = Tensor.randn([2, 3, s, s]), y = Tensor.randint(0, nOut, [2])
            let dls = DataLoaders(train: DataLoader(x, y, batchSize: 2), valid: DataLoader(x, y, batchSize: 2))
            learn = Learner(model: r.make(numClasses: nOut, generator: Generator(seed: recipe.seed)), dls: dls, progress: false)
        } else {
            learn = try recipe.prepare(lr: 1e-3)
        }
        let summary: ModelSummary
        do { summary = try learn.summary() } catch { throw fail(error) }
        print(summary)
        print(jsonLine(["model": recipe.arch.description, "params": summary.totalParams, "mflops": Rounded(summary.totalMFLOPs, 1)]))
    }
}
