import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAIVision

/// `swiftai train`: fit_one_cycle, fine_tune or PyTorch's OneCycleLR, then the run's files and one JSON line.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: """
            Train on Fashion-MNIST (default) or an image folder (--data) with one-cycle AdamW, or fine-tune a \
            torchvision ResNet.
            """,
        discussion: """
            Prints the results table live, writes model.safetensors (an export bundle: `swiftai predict`, \
            `evaluate`, `serve`), history.csv, loss.png and schedule.png (and for classes: confusion_matrix.png, \
            most_confused.txt, top_losses.png) to --out, and ends with one JSON line.
            """)
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Epochs of fit_one_cycle (or of the unfrozen phase with --fine-tune).") var epochs = 5
    @Option(help: "fastai's fine_tune: this many unfrozen epochs after --freeze-epochs with the body frozen.")
    var fineTune: Int?
    @Option(help: "Frozen epochs of --fine-tune.") var freezeEpochs = 1
    @Option(
        help: """
            Peak learning rate (default 2e-2 lesson models, 5e-3 cnn, 1e-3 torchvision; fine-tune's base lr 2e-3); \
            A:B for slice(A, B).
            """)
    var lr: LearningRate?
    @Flag(help: "Also report test-time augmentation's accuracy (fastai's tta: 4 augmented passes, beta 0.25).")
    var tta = false
    @Flag(help: "Also report the lesson's flip TTA: the mean of the plain and the mirrored predictions.")
    var ttaFlip = false
    @OptionGroup var output: OutputFolderOption
    @OptionGroup var distillation: DistillationOptions
    @Option(
        help: """
            Schedule and optimizer for the lesson's models: fastai (fit_one_cycle, AdamW mom 0.9/sqr 0.99/eps 1e-5) or \
            pytorch (OneCycleLR, AdamW defaults), as the reference script.
            """)
    var sched = "fastai"
    @Option(
        help: """
            Compute precision of convolutions and linear layers: fp32, bf16 or fp16 (mixed precision, float32 master \
            weights; fp16 with loss scaling). Where the CPU has no native support, says so and stays fp32.
            """)
    var precision: TrainPrecision = .fp32
    @Option(
        help: """
            Save a checkpoint (checkpoint.safetensors in --out) every N epochs and when Ctrl-C stops the run, for \
            --resume; 0: never.
            """)
    var checkpointEvery = 1
    @Option(
        help: """
            Continue the run whose --out folder is RUN from its last checkpoint, with the arguments it started with \
            (repeating them is allowed; different ones are refused). Ends as the uninterrupted run would, bit for bit.
            """)
    var resume: String?
    @OptionGroup var distributed: DistributedOptions

    func validate() throws {
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must not be negative") }
        guard ["fastai", "pytorch"].contains(sched) else { throw ValidationError("--sched must be fastai or pytorch") }
        guard epochs > 0, (fineTune ?? 1) > 0, freezeEpochs >= 0, recipe.batchSize > 0, recipe.weightDecay >= 0 else {
            throw ValidationError(
                "--epochs, --fine-tune and --bs must be positive, --freeze-epochs and --wd not negative")
        }
    }

    /// `--lr`, or the arch's default (× the number of processes with `--lr-scale linear`).
    func peakLR(processes: Int) -> LearningRate {
        (lr ?? LearningRate(recipe.arch.trainDefaults.lr)).scaled(by: distributed.lrFactor(processes))
    }

    func run() throws {
        guard let resume else { return try train() }
        let given = Array(CommandLine.arguments.dropFirst(2))
        let (command, checkpoint) = try RunArguments.resume(resume, given: given)
        try command.train(resumingFrom: checkpoint)
    }

    /// The run: data and model, training (continuing `checkpoint` when given), then the run's files.
    ///
    /// Under `mpirun` every rank runs this: the ranks train together (``Learner/distributed(_:bucketMegabytes:_:)``)
    /// and rank 0 alone prints and writes the run's files.
    func train(resumingFrom checkpoint: String? = nil) throws {
        let group = try ProcessGroup.fromEnvironment()
        let learn = try recipe.prepare(lr: peakLR(processes: group.size).stop, callbacks: try callbacks())
        if distributed.syncBn && group.size > 1 { convertSyncBatchNorm(learn.model) }
        switch precision {
        case .fp32: break
        case .bf16: learn.toBF16()
        case .fp16: learn.toFP16()
        }
        if group.isMain {
            try output.create()
            if checkpoint == nil {
                try RunArguments.save(Array(CommandLine.arguments.dropFirst(2)), to: output.path(RunArguments.file))
            }
            if group.size > 1 {
                print(
                    "distributed: \(group.size) processes × \(learn.dls.train.batchSize / group.size) items = "
                        + "global batch \(learn.dls.train.batchSize)")
            }
        }
        var accuracies: (tta: Double?, flip: Double?) = (nil, nil)
        try learn.distributed(group, bucketMegabytes: distributed.bucketMb) {
            if let checkpoint { try learn.resume(from: checkpoint) }
            try fit(learn)
            accuracies = try savePredictions(learn)
        }
        guard group.isMain else { return }
        try learn.export(to: output.path("model.safetensors"), pipeline: recipe.inferencePipeline)
        let rec = learn.recorder
        try rec.plotLoss(to: output.path("loss.png"))
        try rec.plotSchedule(to: output.path("schedule.png"))
        if let advice = rec.advice(classes: Swift.max(learn.dls.c, 2), stopReason: learn.stopReason) { print(advice) }
        print(resultLine(learn, group, tta: accuracies.tta, flip: accuracies.flip))
    }

    /// The run's callbacks: stop on a NaN loss, Ctrl-C, history.csv, checkpoints, and distillation with `--teacher`.
    func callbacks() throws -> [Callback] {
        [TerminateOnNaN(), Interrupt(), CSVLogger(path: output.path("history.csv"))] + (try distillation.callbacks())
            + (checkpointEvery > 0
                ? [Checkpoint(path: output.path(RunArguments.checkpoint), every: checkpointEvery)] : [])
    }

    /// Trains: fastai's fine_tune, PyTorch's OneCycleLR (`--sched pytorch`, lesson models) or fit_one_cycle.
    func fit(_ learn: Learner) throws {
        if let fineTune {
            let base = (lr?.stop ?? 2e-3) * distributed.lrFactor(learn.group.size)
            try learn.fineTune(fineTune, baseLr: base, freezeEpochs: freezeEpochs)
        } else if sched == "pytorch", case .lesson = recipe.arch {
            let wd = recipe.weightDecay, peak = peakLR(processes: learn.group.size).stop
            learn.optFunc = { m, lr in AdamW(m.parameters(), lr: lr, weightDecay: wd) }
            let (lrs, moms) = Schedule.oneCycleLR(maxLR: peak, totalSteps: epochs * learn.dls.train.count)
            try learn.fit(epochs, lr: peak, callbacks: [ParamScheduler([(\.lr, lrs), (\.mom, moms)])])
        } else {
            try learn.fitOneCycle(epochs, lrMax: peakLR(processes: learn.group.size))
        }
    }

    /// One validation pass for preds.safetensors (read by `swiftai ensemble`) and the interpretation files, plus the
    /// TTA passes asked for; returns their accuracies. Every rank runs the passes (their shards); rank 0 writes.
    func savePredictions(_ learn: Learner) throws -> (tta: Double?, flip: Double?) {
        let plain = try learn.getPreds(withLoss: true)
        var preds = ["preds": plain.preds, "targets": plain.targets]
        var ttaAccuracy: Double?, flipAccuracy: Double?
        if tta {
            preds["tta_preds"] = try learn.tta().preds
            ttaAccuracy = Metric.accuracy.fn(preds["tta_preds"]!, plain.targets)
        }
        if ttaFlip {
            preds["flip_preds"] = try learn.tta(n: 1, beta: 0.5, transforms: [RandomFlip(p: 1)]).preds
            flipAccuracy = Metric.accuracy.fn(preds["flip_preds"]!, plain.targets)
        }
        guard learn.group.isMain else { return (ttaAccuracy, flipAccuracy) }
        try Safetensors.write(
            preds, metadata: ["vocab": learn.dls.vocab.joined(separator: "\n")],
            to: output.path("preds.safetensors"))
        try writeInterpretation(learn, plain)
        return (ttaAccuracy, flipAccuracy)
    }

    /// confusion_matrix.png, most_confused.txt and (for image folders) top_losses.png in `--out`.
    func writeInterpretation(_ learn: Learner, _ r: (preds: Tensor, targets: Tensor, losses: Tensor)) throws {
        guard learn.dls.c > 0, learn.dls.valid.itemCount > 0 else { return }
        let interp = try ClassificationInterpretation(
            preds: r.preds, targets: r.targets, losses: r.losses,
            vocab: learn.dls.vocab, dl: learn.dls.valid)
        try interp.plotConfusionMatrix(to: output.path("confusion_matrix.png"))
        let lines = interp.mostConfused().map { "\($0.actual)\t\($0.predicted)\t\($0.count)" }
        try (["actual\tpredicted\tcount"] + lines).joined(separator: "\n").appending("\n")
            .write(toFile: output.path("most_confused.txt"), atomically: true, encoding: .utf8)
        if learn.dls.valid.dataset is ImageDataset { try interp.plotTopLosses(9, to: output.path("top_losses.png")) }
    }

    /// The run's JSON line. It names the precision the convolutions really ran in only when mixed precision was asked
    /// for (so fp32 rows keep matching the PyTorch reference's in scripts/compare.py).
    func resultLine(_ learn: Learner, _ group: ProcessGroup, tta: Double?, flip: Double?) -> String {
        let rec = learn.recorder
        let accuracy = rec.last("accuracy") ?? .nan
        let mixed = learn.callback(MixedPrecision.self)
        let computed = mixed.map { $0.unavailable == nil ? $0.precision.rawValue : "float32" } ?? "float32"
        return jsonLine(
            [("model", recipe.arch.description)] + (precision == .fp32 ? [] : [("precision", computed)]) + [
                ("epochs", rec.values.count), ("accuracy", Rounded(accuracy, 4)),
                ("error_rate", Rounded(1 - accuracy, 4)),
                ("valid_loss", Rounded(rec.last("valid_loss") ?? .nan, 4)), ("tta_accuracy", Rounded(tta ?? .nan, 4)),
                ("flip_tta_accuracy", Rounded(flip ?? .nan, 4)), ("train_images_per_s", rec.trainItemsPerSecond)
            ] + (group.size > 1 ? [("world_size", group.size), ("global_bs", learn.dls.train.batchSize)] : [])
                as [(String, Any)])
    }
}

/// `--teacher`, `--temperature`, `--alpha`: knowledge distillation from an export bundle.
struct DistillationOptions: ParsableArguments {
    @Option(
        help: """
            Distil from this teacher (an export bundle taking the same inputs, e.g. `wide` for a `cnn` student).
            """)
    var teacher: String?
    @Option(help: "Distillation temperature T.") var temperature = 4.0
    @Option(help: "Distillation weight α of the teacher's soft loss (1 − α on the labels).") var alpha = 0.5

    func validate() throws {
        guard temperature > 0, (0...1).contains(alpha) else {
            throw ValidationError("--temperature must be positive and --alpha in [0, 1]")
        }
    }

    /// The distillation callback when `--teacher` is given.
    func callbacks() throws -> [Callback] {
        guard let teacher else { return [] }
        return [Distillation(teacher: try loadLearner(teacher).model, temperature: temperature, alpha: alpha)]
    }
}
