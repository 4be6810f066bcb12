import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIVision

/// `swiftai quantize MODEL`: int8 quantization of an export bundle (post-training, dynamic, or quantization-aware).
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: """
            Quantize an export bundle to int8 (static: calibrated activation ranges, per-channel int8 weights, u8·s8 \
            oneDNN convolutions; --dynamic: linear layers only) and write an int8 bundle that predict, evaluate and \
            serve load.
            """,
        discussion: """
            Calibration images: --calib DIR (image files under it, evenly sampled) or --calib fashion-mnist (the \
            training set). --qat N instead fine-tunes N epochs simulating int8 (data: --data DIR or Fashion-MNIST) and \
            converts with the ranges it learned. Prints which layers run in int8 and which stay float32, then one JSON \
            line.
            """)
    @OptionGroup var bundle: BundleArgument
    @Option(help: "Calibration images: a folder, or fashion-mnist.") var calib: String?
    @Option(help: "Calibration batches.") var batches = 32
    @Option(help: "Activation observer: histogram (PyTorch's x86 default) or minmax.") var observer = "histogram"
    @Flag(help: "Dynamic quantization: linear layers only, inputs quantized per batch (no calibration).")
    var dynamic = false
    @Option(
        help: """
            Quantization-aware training: epochs of one-cycle fine-tuning simulating int8 (0: post-training \
            quantization).
            """)
    var qat = 0
    @Option(help: "Peak learning rate of the quantization-aware fine-tuning.") var lr = 1e-4
    @OptionGroup var folder: ImageFolderOptions
    @OptionGroup var fmnist: FashionMNISTOption
    @Option(
        help: """
            Also write the calibration batches (after the pipeline) here, e.g. to calibrate another framework alike.
            """)
    var saveCalibration: String?
    @Option(help: "The int8 bundle.") var to: String

    func validate() throws {
        guard batches >= 1, (folder.bs ?? 1) >= 1, qat >= 0, lr > 0, ActivationObserver(rawValue: observer) != nil
        else {
            throw ValidationError(
                "--batches and --bs must be at least 1, --qat ≥ 0, --lr positive, --observer histogram or minmax")
        }
        guard dynamic || qat > 0 || calib != nil else {
            throw ValidationError(
                "post-training quantization needs --calib DIR|fashion-mnist (or --dynamic, or --qat EPOCHS)")
        }
    }

    /// Under `mpirun` the ranks share the calibration's loading (or the QAT fit); rank 0 writes the bundle.
    func run() throws {
        let group = try ProcessGroup.fromEnvironment()
        let learn = try bundle.load(fused: false)
        guard !(learn.model is QuantizedModel) else {
            throw ValidationError("'\(bundle.model)' is already an int8 bundle")
        }
        let pipeline = try InferencePipeline(learn.dls)
        var quantized: Learner?
        try learn.distributed(group) { quantized = try quantize(learn, pipeline) }
        guard group.isMain, let q = quantized else { return }
        let report = (q.model as! QuantizedModel).report
        try q.export(to: to)
        let bytes = (try? fileSize(to)) ?? 0, before = (try? fileSize(bundle.model)) ?? 0
        print(
            "int8: \(report.quantized.count) layers"
                + (report.float.isEmpty
                    ? ""
                    : "; float32: "
                        + report.float.map { "\($0.name) (\($0.reason))" }.joined(separator: ", ")))
        print(
            jsonLine([
                "model": to, "scheme": dynamic ? "dynamic" : "static",
                "observer": dynamic ? "none" : qat > 0 ? "qat" : observer,
                "bytes": bytes, "ratio": Rounded(Double(bytes) / Double(max(before, 1)), 3),
                "int8_layers": report.quantized.count, "float_layers": report.float.count
            ]))
    }

    /// The int8 learner: dynamic, after quantization-aware training, or calibrated.
    func quantize(_ learn: Learner, _ pipeline: InferencePipeline) throws -> Learner {
        if dynamic { return try learn.quantizedDynamic() }
        if qat > 0 {
            learn.dls = try folder.trainingData(fmnist, for: learn)
            let sim = learn.prepareQAT()
            try learn.fitOneCycle(qat, lrMax: lr)
            learn.dls = pipeline.dataLoaders()  // the bundle's own inference pipeline
            return try learn.quantized(from: sim)
        }
        let dl = try calibrationLoader(pipeline)
        if let saveCalibration, learn.group.isMain { try saveBatches(dl, batches: batches, to: saveCalibration) }
        return try learn.quantized(
            calibration: dl, batches: batches, observer: ActivationObserver(rawValue: observer)!,
            inputShape: pipeline.inputSize)
    }

    /// `batches · bs` calibration images through the bundle's pipeline: evenly spaced over a folder's image files or
    /// Fashion-MNIST's training set.
    func calibrationLoader(_ pipeline: InferencePipeline) throws -> DataLoader {
        let bs = folder.bs ?? 32, want = batches * bs
        func spaced(_ n: Int) -> [Int] { Array(stride(from: 0, to: n, by: max(1, n / want)).prefix(want)) }
        if calib == "fashion-mnist" {
            guard pipeline.mode.channels == 1 else {
                throw CompressionError.calibration(
                    """
                    Fashion-MNIST images have 1 channel but the model takes \(pipeline.mode.channels)-channel \
                    \(pipeline.inputSize.map { "\($0)" } ?? "") inputs; give --calib DIR with the model's kind of images
                    """)
            }
            let fm = try fmnist.load()
            let pixels = fm.trainImages.contiguous().scalars(as: UInt8.self)
            let images = spaced(fm.trainImages.shape[0]).map {
                Image(width: 28, height: 28, channels: 1, pixels: Array(pixels[($0 * 784)..<(($0 + 1) * 784)]))
            }
            return try pipeline.testDL(images: images, batchSize: bs)
        }
        let files = try getImageFiles(Path(calib!))
        guard !files.isEmpty else { throw CompressionError.calibration("no image files under '\(calib!)'") }
        let idx = spaced(files.count)
        return try pipeline.testDL(
            idx.map { files[$0] }, batchSize: bs,
            workers: ProcessInfo.processInfo.activeProcessorCount)
    }
}
