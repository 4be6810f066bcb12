import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAIVision

/// `swiftai evaluate MODEL`: an export bundle's metrics on a labelled image folder or Fashion-MNIST's test set.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: """
            Evaluate an export bundle on the validation split of an image folder (--data, split and labels as \
            `train`) or on Fashion-MNIST's test set.
            """,
        discussion: """
            Prints the metrics, writes confusion_matrix.png, most_confused.txt and preds.safetensors (probabilities, \
            targets) to --out, and ends with one JSON line with accuracy, error_rate and valid_loss.
            """)
    @OptionGroup var bundle: BundleArgument
    @OptionGroup var folder: ImageFolderOptions
    @OptionGroup var fmnist: FashionMNISTOption
    @OptionGroup var output: OutputFolderOption
    @Flag(help: "Also report test-time augmentation's accuracy.") var tta = false
    @Flag(
        help: """
            Also write the model's input batches (after the pipeline) and targets to inputs.safetensors, e.g. \
            to evaluate another framework on the same tensors.
            """)
    var saveInputs = false
    @OptionGroup var threads: ThreadOptions

    /// Under `mpirun` each rank evaluates its shard; the predictions are gathered and rank 0 reports.
    func run() throws {
        let group = try ProcessGroup.fromEnvironment()
        threads.apply()
        let learn = try bundle.load()
        let pipeline = try InferencePipeline(learn.dls)
        let dl = try testLoader(pipeline)
        var r = (preds: Tensor.zeros([0]), targets: Tensor.zeros([0]), losses: Tensor.zeros([0]))
        var ttaAccuracy = Double.nan
        try learn.distributed(group) {
            r = try learn.getPreds(dl, withLoss: true)
            if tta { ttaAccuracy = Metric.accuracy.fn(try learn.tta(dl).preds, r.targets) }
        }
        guard group.isMain else { return }
        let accuracy = Metric.accuracy.fn(r.preds, r.targets), loss = r.losses.mean().item()
        try output.create()
        try Safetensors.write(
            ["preds": r.preds, "targets": r.targets],
            metadata: ["vocab": pipeline.vocab.joined(separator: "\n")],
            to: output.path("preds.safetensors"))
        if saveInputs { try saveBatches(dl, batches: dl.count, to: output.path("inputs.safetensors")) }
        let interp = try ClassificationInterpretation(
            preds: r.preds, targets: r.targets, losses: r.losses,
            vocab: pipeline.vocab)
        try interp.plotConfusionMatrix(to: output.path("confusion_matrix.png"))
        let confused = interp.mostConfused()
        try (["actual\tpredicted\tcount"] + confused.map { "\($0.actual)\t\($0.predicted)\t\($0.count)" })
            .joined(separator: "\n").appending("\n")
            .write(toFile: output.path("most_confused.txt"), atomically: true, encoding: .utf8)
        print(
            String(
                format: "%d items  accuracy %.4f  error_rate %.4f  valid_loss %.4f", r.targets.count, accuracy,
                1 - accuracy, loss))
        for c in confused.prefix(5) { print("  \(c.actual) → \(c.predicted): \(c.count)") }
        print(
            jsonLine([
                "model": bundle.model, "items": r.targets.count, "accuracy": Rounded(accuracy, 4),
                "error_rate": Rounded(1 - accuracy, 4), "valid_loss": Rounded(loss, 4),
                "tta_accuracy": Rounded(ttaAccuracy, 4)
            ]))
    }

    /// The labelled images through the bundle's pipeline: the folder's validation split, or Fashion-MNIST's test set.
    func testLoader(_ pipeline: InferencePipeline) throws -> DataLoader {
        if let data = folder.data {
            let ds = try folder.dataBlock(Path(data)).datasets(Path(data), strict: folder.strict)
            let labels = ds.valid.targets.map { ds.vocab[$0[0]] }
            return try pipeline.testDL(
                ds.valid.items, labels: labels, batchSize: folder.bs ?? 64,
                maxPixels: folder.maxPixels,
                workers: folder.workers ?? ProcessInfo.processInfo.activeProcessorCount)
        }
        let fm = try fmnist.load()
        let n = fm.testImages.shape[0], pixels = fm.testImages.contiguous().scalars(as: UInt8.self)
        let images = (0..<n).map {
            Image(width: 28, height: 28, channels: 1, pixels: Array(pixels[($0 * 784)..<(($0 + 1) * 784)]))
        }
        let labels = fm.testLabels.scalars(as: Int64.self).map { FashionMNIST.classes[Int($0)] }
        return try pipeline.testDL(images: images, labels: labels, batchSize: folder.bs ?? 256)
    }
}

/// The inputs (channels-first, contiguous) and targets of a loader's first `batches` batches, written to `path`.
func saveBatches(_ dl: DataLoader, batches: Int, to path: String) throws {
    var xs: [Tensor] = [], ys: [Tensor] = []
    let it = dl.makeIterator()
    while xs.count < batches, let b = try it.nextBatch() {
        xs.append(b.x.contiguous())
        ys.append(b.y)
    }
    try Safetensors.write(["inputs": Tensor.cat(xs), "targets": Tensor.cat(ys)], metadata: [:], to: path)
}
