import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAIVision

// The option groups several commands share, each defined once.

/// The export bundle a command reads (`model.safetensors` of `swiftai train --out`).
struct BundleArgument: ParsableArguments {
    @Argument(help: "Export bundle.") var model: String

    /// The bundle as a learner; `fused`: the inference graph (BatchNorm folded), else the trainable model.
    func load(fused: Bool = true) throws -> Learner { try loadLearner(model, fused: fused) }
}

/// `--out DIR`: the folder a command writes its files to.
struct OutputFolderOption: ParsableArguments {
    @Option(help: "Output folder.") var out = "out"

    /// `DIR/name`.
    func path(_ name: String) -> String { out + "/" + name }

    /// Creates the folder (and its parents) unless it exists.
    func create() throws { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) }
}

/// `--threads N`.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?

    /// Sets the engine's thread count when `--threads` is given.
    func apply() {
        if let threads { Parallel.threadCount = threads }
    }
}

/// `--fmnist DIR`: where Fashion-MNIST's IDX files are.
struct FashionMNISTOption: ParsableArguments {
    @Option(help: "Fashion-MNIST IDX folder (default: FMNIST_DIR or /usr/share/datasets/fashion-mnist).")
    var fmnist: String?

    func load() throws -> FashionMNIST { try FashionMNIST(directory: fmnist) }
}

/// How the CLI reads an image folder: labels, split, presizing and loading.
struct ImageFolderOptions: ParsableArguments {
    @Option(help: "Image folder (default: Fashion-MNIST as PNG files, written once to the cache).") var data: String?
    @Option(
        help: """
            Label = first group of this regular expression searched in the file name (default: the parent \
            folder's name).
            """)
    var labelRe: String?
    @Option(help: "Validation share when DIR has no train/ + valid/ (or test/) folders.") var validPct = 0.2
    @Option(help: "Seed for the split, shuffling and augmentation.") var seed: UInt64 = 42
    @Option(help: "Item transform: Resize to this square size (random crop on training, centre crop on validation).")
    var presize = 460
    @Option(help: "Batch transforms: augTransforms to this size.") var size = 224
    @Option(help: "augTransforms' minScale (RandomResizedCropGPU when below 1).") var minScale = 0.75
    @Flag(help: "No Resize and no augmentation (batches need equal image sizes).") var noResize = false
    @Option(help: "Batch size (default 64; train's Fashion-MNIST default depends on --arch).") var bs: Int?
    @Option(help: "Decoding threads (default: the number of cores, ÷ ranks per host under mpirun).") var workers: Int?
    @Option(help: "Refuse images with more pixels than this.") var maxPixels = Image.defaultMaxPixels
    @Flag(help: "Stop at the first unreadable image instead of skipping it.") var strict = false

    /// The folder in use: `--data`, or the Fashion-MNIST PNG folder (written on first use).
    func folder() throws -> Path {
        if let data { return Path(data) }
        let dir = Path(FashionMNISTImages.defaultDirectory)
        try FashionMNISTImages.ensure(at: dir)
        return dir
    }

    /// The DataBlock the options describe. Split: `DIR/train` + `DIR/valid` (or `DIR/test`) when present, else
    /// a random `--valid-pct`.
    func dataBlock(_ dir: Path) throws -> DataBlock {
        guard dir.isDirectory else { throw DataBlockError.missingFolder(dir) }
        let validName = ["valid", "test"].first { (dir / $0).isDirectory }
        let byFolder = (dir / "train").isDirectory && validName != nil
        let splitter: Splitter =
            byFolder
            ? GrandparentSplitter(train: "train", valid: validName!)
            : RandomSplitter(validPct: validPct, seed: seed)
        let folders = byFolder ? ["train", validName!] : []
        let getY: (Path) throws -> String
        if let labelRe {
            let re = try RegexLabeller(labelRe)
            getY = usingAttr(re, \.name)
        } else {
            getY = parentLabel
        }
        var block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()),
            getItems: { try getImageFiles($0, folders: folders) }, splitter: splitter, getY: getY,
            itemTfms: noResize ? [] : [Resize(presize)],
            batchTfms: noResize
                ? []
                : augTransforms(size: size, minScale: minScale)
                    + [Normalize.imagenet])
        block.maxPixels = maxPixels
        return block
    }

    func dataloaders(bs: Int? = nil) throws -> (Path, DataLoaders) {
        let dir = try folder()
        let dls = try dataBlock(dir).dataloaders(
            from: dir, bs: bs ?? self.bs ?? 64, numWorkers: workers, seed: seed,
            strict: strict)
        return (dir, dls)
    }

    /// Fine-tuning data for a loaded bundle: the image folder (split and labels as `train`) or Fashion-MNIST, with
    /// the bundle's classes.
    func trainingData(_ fmnist: FashionMNISTOption, for learn: Learner) throws -> DataLoaders {
        let dls =
            data != nil
            ? try dataloaders().1
            : DataLoaders.fashionMNIST(try fmnist.load(), batchSize: bs ?? 256, seed: seed)
        guard dls.vocab == learn.dls.vocab else {
            let theirs = dls.vocab.prefix(5).joined(separator: ", ")
            let ours = learn.dls.vocab.prefix(5).joined(separator: ", ")
            throw ValidationError("the data's classes (\(theirs)…) are not the model's (\(ours)…)")
        }
        return dls
    }
}

/// The training recipe of `train`, `lr-find` and `summary`: model, data, batch size and loss.
struct RecipeOptions: ParsableArguments {
    @Option(
        name: [.customLong("arch"), .customLong("model")],
        help: """
            Architecture: cnn, resnet, wide (the lesson's, Fashion-MNIST tensors) or resnet18…resnet152 (torchvision).
            """)
    var arch: Arch = .lesson(.resnet)
    @OptionGroup var folder: ImageFolderOptions
    @OptionGroup var fmnist: FashionMNISTOption
    @Option(
        help: """
            Pretrained weights for a torchvision arch (.pth or .safetensors); default: torchvision's checkpoint cache.
            """)
    var weights: String?
    @Flag(help: "Start a torchvision arch from random weights even when a checkpoint is cached.")
    var noPretrained = false
    @OptionGroup var threads: ThreadOptions
    @Option(help: "Stop each training epoch after this many batches (quick runs).") var limitBatches: Int?
    @Flag(
        help: """
            Fashion-MNIST: random crop (padding 1) and horizontal flip of training batches (folders always use \
            augTransforms).
            """)
    var aug = false
    @Option(help: "Label smoothing of the cross-entropy loss.") var labelSmoothing = 0.0
    @Option(help: "Weight decay (decoupled, AdamW; default 0.01, 0.1 for cnn).") var wd: Double?

    /// How images become the model's input, for the export bundle: the folder's own pipeline, or Fashion-MNIST's.
    var inferencePipeline: InferencePipeline? {
        folder.data != nil ? nil : .fashionMNIST(augment: augment)
    }

    var batchSize: Int { folder.bs ?? (folder.data == nil ? arch.trainDefaults.bs : 64) }
    var weightDecay: Double { wd ?? arch.trainDefaults.wd }
    var seed: UInt64 { folder.seed }
    private var augment: [BatchTransform] { aug ? [RandomCrop(padding: 1), RandomFlip()] : [] }

    func validate() throws {
        if folder.data != nil, case .lesson = arch {
            throw ValidationError(
                """
                the lesson's models (cnn, resnet, wide) take Fashion-MNIST tensors; use --arch resnet18…resnet152 \
                with --data
                """)
        }
    }

    /// Loaders (an image folder, or Fashion-MNIST's tensors) and a learner for them.
    func prepare(lr: Double, callbacks: [Callback] = []) throws -> Learner {
        threads.apply()
        manualSeed(seed)
        let dls =
            folder.data != nil
            ? try folder.dataloaders(bs: batchSize).1
            : DataLoaders.fashionMNIST(try fmnist.load(), batchSize: batchSize, seed: seed, augment: augment)
        dls.train.maxBatches = limitBatches
        let wd = weightDecay
        let loss = CrossEntropyLoss(labelSmoothing: labelSmoothing)
        let learn: Learner
        switch arch {
        case let .lesson(m):
            learn = Learner(
                model: m.make(generator: Generator(seed: seed)), dls: dls, lossFunc: loss, lr: lr,
                metrics: [.accuracy], callbacks: callbacks)
            learn.modelSpec = .lesson(m)
        case let .torchvision(r):
            learn = try visionLearner(
                dls, r, pretrained: !noPretrained, weights: weights, lossFunc: loss,
                metrics: [.accuracy], nIn: folder.data == nil ? 1 : 3, lr: lr,
                generator: Generator(seed: seed))
            for cb in callbacks { learn.add(cb) }
        }
        learn.optFunc = { AdamW.fastai($0, lr: $1, wd: wd) }
        return learn
    }
}

/// `--lr-scale`, `--sync-bn`, `--bucket-mb`: data-parallel training when `mpirun` starts the command.
struct DistributedOptions: ParsableArguments {
    @Option(
        help: """
            Under mpirun: none (the learning rate of one process at the same global batch) or linear (× the number \
            of processes, Goyal et al. 2017; the one-cycle schedule's warm-up is the gradual warm-up).
            """)
    var lrScale = "none"
    @Flag(help: "Under mpirun: BatchNorm statistics over every rank's items (SyncBatchNorm) instead of each rank's.")
    var syncBn = false
    @Option(help: "Under mpirun: size in MiB of the buckets gradients are all-reduced in (PyTorch DDP's 25).")
    var bucketMb = 25.0

    func validate() throws {
        guard ["none", "linear"].contains(lrScale) else { throw ValidationError("--lr-scale must be none or linear") }
        guard bucketMb > 0 else { throw ValidationError("--bucket-mb must be positive") }
    }

    /// What the learning rate is multiplied by in a job of `size` processes.
    func lrFactor(_ size: Int) -> Double { lrScale == "linear" ? Double(size) : 1 }
}
