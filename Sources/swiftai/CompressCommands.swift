import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAIVision

/// `swiftai prune MODEL`: L1 unstructured pruning of an export bundle, fine-tuned with the masks kept, or structured
/// channel pruning (`--structured`) that makes the model smaller.
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prune an export bundle, fine-tune it, write a new bundle.",
        discussion: """
            L1 unstructured (default): the smallest-magnitude share of conv/linear weights set to zero, kept at zero while fine-tuning. \
            --structured: the output channels with the smallest filter L1 norms removed from every convolution no residual add reads \
            (with their BatchNorm entries and the next convolution's inputs), so the model is smaller and faster.
            Data for fine-tuning and the accuracy before/after: --data DIR (split and labels as `train`) or Fashion-MNIST. Ends with one JSON line.
            """)
    @Argument(help: "Export bundle.") var model: String
    @Option(help: "Share of the weights (or with --structured, of each pruned convolution's channels) to prune (0…1).") var amount = 0.5
    @Option(help: "global (rank all layers' weights together) or per-layer; unstructured only.") var scope = "global"
    @Flag(help: "Remove whole channels instead of masking weights.") var structured = false
    @Option(help: "Epochs of one-cycle fine-tuning with the masks kept (0: none).") var fineTune = 1
    @Option(help: "Peak learning rate of the fine-tuning.") var lr = 1e-3
    @OptionGroup var folder: ImageFolderOptions
    @Option(help: "Fashion-MNIST IDX folder when no --data is given.") var fmnist: String?
    @Option(help: "The pruned bundle.") var to: String

    func validate() throws {
        guard (0...1).contains(amount), fineTune >= 0, lr > 0, PruningScope(rawValue: scope) != nil else {
            throw ValidationError("--amount must be in [0, 1], --fine-tune ≥ 0, --lr positive, --scope global or per-layer")
        }
    }

    func run() throws {
        do {
            let learn = try loadLearner(model, fused: false)
            let dls = try trainingData(folder, fmnist: fmnist, for: learn)
            let pipeline = learn.dls
            learn.dls = dls
            func accuracy() throws -> Double {
                let r = try learn.getPreds()
                return Metric.accuracy.fn(r.preds, r.targets)
            }
            let before = try accuracy(), parametersBefore = learn.model.parameterCount
            var summary: [(String, Any)] = [("model", to)]
            if structured {
                try learn.pruneChannels(amount: amount)
                summary += [("parameters_before", parametersBefore), ("parameters_after", learn.model.parameterCount)]
            } else {
                let masks = learn.model.pruneL1Unstructured(amount: amount, scope: PruningScope(rawValue: scope)!)
                learn.add(KeepPruned(masks))
                summary.append(("sparsity", Rounded(masks.sparsity, 4)))
            }
            let pruned = try accuracy()
            if fineTune > 0 { try learn.fitOneCycle(fineTune, lrMax: lr) }
            let after = try accuracy()
            learn.dls = pipeline  // the bundle's own inference pipeline
            try learn.export(to: to)
            print(jsonLine(summary + [("accuracy_before", Rounded(before, 4)), ("accuracy_pruned", Rounded(pruned, 4)),
                                      ("accuracy_fine_tuned", Rounded(after, 4))]))
        } catch { throw fail(error) }
    }
}

/// Fine-tuning data for a loaded bundle: an image folder (split and labels as `train`) or Fashion-MNIST, with the
/// bundle's classes.
func trainingData(_ folder: ImageFolderOptions, fmnist: String?, for learn: Learner) throws -> DataLoaders {
    let dls = folder.data != nil ? try folder.dataloaders().1
        : DataLoaders.fashionMNIST(try FashionMNIST(directory: fmnist), batchSize: folder.bs ?? 256, seed: folder.seed)
    guard dls.vocab == learn.dls.vocab else {
        throw ValidationError("the data's classes (\(dls.vocab.prefix(5).joined(separator: ", "))…) are not the model's (\(learn.dls.vocab.prefix(5).joined(separator: ", "))…)")
    }
    return dls
}

/// `swiftai quantize MODEL`: int8 quantization of an export bundle (post-training, dynamic, or quantization-aware).
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Quantize an export bundle to int8 (static: calibrated activation ranges, per-channel int8 weights, u8·s8 oneDNN convolutions; --dynamic: linear layers only) and write an int8 bundle that predict, evaluate and serve load.",
        discussion: "Calibration images: --calib DIR (image files under it, evenly sampled) or --calib fashion-mnist (the training set). --qat N instead fine-tunes N epochs simulating int8 (data: --data DIR or Fashion-MNIST) and converts with the ranges it learned. Prints which layers run in int8 and which stay float32, then one JSON line.")
    @Argument(help: "Export bundle (float32 or half precision).") var model: String
    @Option(help: "Calibration images: a folder, or fashion-mnist.") var calib: String?
    @Option(help: "Calibration batches.") var batches = 32
    @Option(help: "Activation observer: histogram (PyTorch's x86 default) or minmax.") var observer = "histogram"
    @Flag(help: "Dynamic quantization: linear layers only, inputs quantized per batch (no calibration).") var dynamic = false
    @Option(help: "Quantization-aware training: epochs of one-cycle fine-tuning simulating int8 (0: post-training quantization).")
    var qat = 0
    @Option(help: "Peak learning rate of the quantization-aware fine-tuning.") var lr = 1e-4
    @OptionGroup var folder: ImageFolderOptions
    @Option(help: "Fashion-MNIST IDX folder for --calib fashion-mnist (default: FMNIST_DIR or /usr/share/datasets/fashion-mnist).")
    var fmnist: String?
    @Option(help: "Also write the calibration batches (after the pipeline) here, e.g. to calibrate another framework alike.")
    var saveCalibration: String?
    @Option(help: "The int8 bundle.") var to: String

    func validate() throws {
        guard batches >= 1, (folder.bs ?? 1) >= 1, qat >= 0, lr > 0, ActivationObserver(rawValue: observer) != nil else {
            throw ValidationError("--batches and --bs must be at least 1, --qat ≥ 0, --lr positive, --observer histogram or minmax")
        }
        guard dynamic || qat > 0 || calib != nil else {
            throw ValidationError("post-training quantization needs --calib DIR|fashion-mnist (or --dynamic, or --qat EPOCHS)")
        }
    }

    func run() throws {
        do {
            let learn = try loadLearner(model, fused: false)
            guard !(learn.model is QuantizedModel) else { throw ValidationError("'\(model)' is already an int8 bundle") }
            let pipeline = try InferencePipeline(learn.dls)
            let q: Learner
            if dynamic {
                q = try learn.quantizedDynamic()
            } else if qat > 0 {
                learn.dls = try trainingData(folder, fmnist: fmnist, for: learn)
                let sim = learn.prepareQAT()
                try learn.fitOneCycle(qat, lrMax: lr)
                learn.dls = pipeline.dataLoaders()  // the bundle's own inference pipeline
                q = try learn.quantized(from: sim)
            } else {
                let dl = try calibrationLoader(pipeline)
                if let saveCalibration { try saveBatches(dl, batches: batches, to: saveCalibration) }
                q = try learn.quantized(calibration: dl, batches: batches, observer: ActivationObserver(rawValue: observer)!,
                                        inputShape: pipeline.inputSize)
            }
            let report = (q.model as! QuantizedModel).report
            try q.export(to: to)
            let size = { (p: String) in (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0 }
            print("int8: \(report.quantized.count) layers" + (report.float.isEmpty ? "" : "; float32: "
                  + report.float.map { "\($0.name) (\($0.reason))" }.joined(separator: ", ")))
            print(jsonLine(["model": to, "scheme": dynamic ? "dynamic" : "static", "observer": dynamic ? "none" : qat > 0 ? "qat" : observer,
                            "bytes": size(to), "ratio": Rounded(Double(size(to)) / Double(max(size(model), 1)), 3),
                            "int8_layers": report.quantized.count, "float_layers": report.float.count]))
        } catch { throw fail(error) }
    }

    /// `batches · bs` calibration images through the bundle's pipeline: evenly spaced over a folder's image files or
    /// Fashion-MNIST's training set.
    func calibrationLoader(_ pipeline: InferencePipeline) throws -> DataLoader {
        let bs = folder.bs ?? 32, want = batches * bs
        func spaced(_ n: Int) -> [Int] { Array(stride(from: 0, to: n, by: max(1, n / want)).prefix(want)) }
        if calib == "fashion-mnist" {
            guard pipeline.mode.channels == 1 else {
                throw CompressionError.calibration("Fashion-MNIST images have 1 channel but the model takes \(pipeline.mode.channels)-channel \(pipeline.inputSize.map { "\($0)" } ?? "") inputs; give --calib DIR with the model's kind of images")
            }
            let fm = try FashionMNIST(directory: fmnist)
            let pixels = fm.trainImages.contiguous().scalars(as: UInt8.self)
            let images = spaced(fm.trainImages.shape[0]).map {
                Image(width: 28, height: 28, channels: 1, pixels: Array(pixels[($0 * 784)..<(($0 + 1) * 784)]))
            }
            return try pipeline.testDL(images: images, batchSize: bs)
        }
        let files = try getImageFiles(Path(calib!))
        guard !files.isEmpty else { throw CompressionError.calibration("no image files under '\(calib!)'") }
        let idx = spaced(files.count)
        return try pipeline.testDL(idx.map { files[$0] }, batchSize: bs, workers: ProcessInfo.processInfo.activeProcessorCount)
    }
}
