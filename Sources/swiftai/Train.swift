import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

/// Options shared by `train`, `lr-find` and `summary`.
struct RecipeOptions: ParsableArguments {
    @Option(help: "Model: cnn, resnet or wide.") var model: FashionMNISTModel = .resnet
    @Option(help: "Batch size (default 1024; 32 for cnn).") var bs: Int?
    @Option(help: "Seed for initialisation, shuffling and augmentation.") var seed: UInt64 = 42
    @Option(help: "Fashion-MNIST folder (default: FMNIST_DIR or /usr/share/datasets/fashion-mnist).") var data: String?
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?
    @Option(help: "Stop each training epoch after this many batches (quick runs).") var limitBatches: Int?
    @Flag(help: "Random crop (padding 1) and horizontal flip of training batches.") var aug = false
    @Option(help: "Label smoothing of the cross-entropy loss.") var labelSmoothing = 0.0
    @Option(help: "Weight decay (decoupled, AdamW; default 0.01, 0.1 for cnn).") var wd: Double?

    /// The batch size in effect.
    var batchSize: Int { bs ?? model.trainDefaults.bs }
    /// The weight decay in effect.
    var weightDecay: Double { wd ?? model.trainDefaults.wd }

    /// Dataset, loaders and a seeded model; a missing dataset prints how to install it and exits 1.
    func prepare() throws -> (FashionMNIST, DataLoaders, Module) {
        if let threads { Parallel.threadCount = threads }
        manualSeed(seed)
        let ds: FashionMNIST
        do { ds = try FashionMNIST(directory: data) } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode.failure
        }
        let dls = DataLoaders.fashionMNIST(ds, batchSize: batchSize, seed: seed,
                                           augment: aug ? [RandomCrop(padding: 1), RandomFlip()] : [])
        dls.train.maxBatches = limitBatches
        return (ds, dls, model.make(generator: Generator(seed: seed)))
    }

    func learner(_ dls: DataLoaders, _ net: Module, lr: Double, callbacks: [Callback] = []) -> Learner {
        let wd = weightDecay
        return Learner(model: net, dls: dls, lossFunc: CrossEntropyLoss(labelSmoothing: labelSmoothing), lr: lr, metrics: [.accuracy],
                       callbacks: callbacks, optFunc: { AdamW.fastai($0, lr: $1, wd: wd) })
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
    fflush(stdout)  // what was printed so far comes before the error when both go to one file
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode.failure
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a Fashion-MNIST model with one-cycle AdamW, as the lesson does.",
        discussion: "Prints the results table live, writes model.safetensors, history.csv, loss.png and schedule.png to --out, and ends with one JSON line.")
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Epochs.") var epochs = 5
    @Option(help: "Peak learning rate of the one-cycle schedule (default 2e-2; 5e-3 for cnn).") var lr: Double?
    @Option(help: "Output folder.") var out = "out"
    @Option(help: "Schedule and optimizer: fastai (fit_one_cycle, AdamW mom 0.9/sqr 0.99/eps 1e-5) or pytorch (OneCycleLR, AdamW defaults), as the reference script.")
    var sched = "fastai"

    func validate() throws {
        guard ["fastai", "pytorch"].contains(sched) else { throw ValidationError("--sched must be fastai or pytorch") }
        guard epochs > 0, (lr ?? 1) > 0, recipe.batchSize > 0, recipe.weightDecay >= 0 else {
            throw ValidationError("--epochs, --lr and --bs must be positive, --wd not negative")
        }
    }

    func run() throws {
        let lr = self.lr ?? recipe.model.trainDefaults.lr
        let (_, dls, net) = try recipe.prepare()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let learn = recipe.learner(dls, net, lr: lr, callbacks: [TerminateOnNaN(), Interrupt(), CSVLogger(path: out + "/history.csv")])
        do {
            if sched == "pytorch" {
                let wd = recipe.weightDecay
                learn.optFunc = { m, lr in AdamW(m.parameters(), lr: lr, weightDecay: wd) }
                let (lrs, moms) = Schedule.oneCycleLR(maxLR: lr, totalSteps: epochs * dls.train.count)
                try learn.fit(epochs, lr: lr, callbacks: [ParamScheduler([(\.lr, lrs), (\.mom, moms)])])
            } else {
                try learn.fitOneCycle(epochs, lrMax: lr)
            }
        } catch {
            throw fail(error)
        }
        let rec = learn.recorder
        try net.save(to: out + "/model.safetensors", metadata: ["model": recipe.model.rawValue, "epochs": String(epochs),
                                                                "stopped": learn.stopReason ?? ""])
        try rec.plotLoss(to: out + "/loss.png")
        try rec.plotSchedule(to: out + "/schedule.png")
        if let advice = rec.advice(classes: 10, stopReason: learn.stopReason) { print(advice) }
        print(jsonLine(["model": recipe.model.rawValue, "epochs": rec.values.count,
                        "accuracy": Rounded(rec.last("accuracy") ?? .nan, 4), "valid_loss": Rounded(rec.last("valid_loss") ?? .nan, 4),
                        "train_images_per_s": rec.trainItemsPerSecond]))
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
        let (_, dls, net) = try recipe.prepare()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let learn = recipe.learner(dls, net, lr: 1e-3)
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
    static let configuration = CommandConfiguration(abstract: "The lesson's model summary: module, shapes, parameters, MFLOPs.")
    @OptionGroup var recipe: RecipeOptions

    func run() throws {
        let (_, dls, net) = try recipe.prepare()
        let learn = recipe.learner(dls, net, lr: 1e-3)
        let summary: ModelSummary
        do { summary = try learn.summary() } catch { throw fail(error) }
        print(summary)
        print(jsonLine(["model": recipe.model.rawValue, "params": summary.totalParams, "mflops": Rounded(summary.totalMFLOPs, 1)]))
    }
}
