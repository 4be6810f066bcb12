import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAIVision

/// `swiftai predict MODEL IMAGE…`: classify image files with an export bundle.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images with an export bundle (model.safetensors of `swiftai train --out`).",
        discussion: "Prints a table, then one JSON line per image: {\"file\":…,\"label\":…,\"probs\":{top-k classes}}. Unreadable images get {\"file\":…,\"error\":…} and exit code 1.")
    @Argument(help: "Export bundle.") var model: String
    @Argument(help: "Image files (JPEG or PNG).") var images: [String]
    @Flag(help: "Test-time augmentation (fastai's tta: 4 augmented passes, beta 0.25).") var tta = false
    @Option(help: "Classes listed per image.") var topK = 3
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give one or more image files") }
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
    }

    func run() throws {
        if let threads { Parallel.threadCount = threads }
        let learn: Learner, pipeline: InferencePipeline
        do {
            learn = try loadLearner(model)
            pipeline = try InferencePipeline(learn.dls)
        } catch { throw fail(error) }
        var decoded: [(String, Image)] = [], failed: [(String, String)] = []
        for path in images {
            do { decoded.append((path, try Image.read(path, mode: pipeline.mode))) } catch { failed.append((path, "\(error)")) }
        }
        var lines: [String] = []
        if !decoded.isEmpty {
            let preds: Tensor
            do {
                let dl = try pipeline.testDL(images: decoded.map(\.1))
                preds = tta ? try learn.tta(dl).preds : try learn.getPreds(dl).preds
            } catch { throw fail(error) }
            let k = min(topK, pipeline.vocab.count)
            print("file".padding(toLength: 32, withPad: " ", startingAt: 0) + "  label".padding(toLength: 22, withPad: " ", startingAt: 0) + "  top \(k)")
            for (row, (path, _)) in decoded.enumerated() {
                let p = preds[row].doubles
                let top = p.indices.sorted { p[$0] > p[$1] }.prefix(k)
                let label = pipeline.vocab[top.first!]
                let shown = (path as NSString).lastPathComponent
                print(shown.padding(toLength: 32, withPad: " ", startingAt: 0) + "  " + label.padding(toLength: 20, withPad: " ", startingAt: 0)
                      + "  " + top.map { "\(pipeline.vocab[$0]) \(String(format: "%.3f", p[$0]))" }.joined(separator: ", "))
                let probs = "{" + top.map { "\"\(jsonEscaped(pipeline.vocab[$0]))\":\(String(format: "%.6f", p[$0]))" }.joined(separator: ",") + "}"
                lines.append(String(jsonLine(["file": path, "label": label]).dropLast()) + ",\"probs\":" + probs + "}")
            }
        }
        for line in lines { print(line) }
        for (path, why) in failed {
            print(jsonLine(["file": path, "error": why]))
            FileHandle.standardError.write(Data("error: \(why)\n".utf8))
        }
        if !failed.isEmpty { throw ExitCode.failure }
    }
}

/// `swiftai evaluate MODEL`: an export bundle's metrics on a labelled image folder or Fashion-MNIST's test set.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate an export bundle on the validation split of an image folder (--data, split and labels as `train`) or on Fashion-MNIST's test set.",
        discussion: "Prints the metrics, writes confusion_matrix.png, most_confused.txt and preds.safetensors (probabilities, targets) to --out, and ends with one JSON line with accuracy, error_rate and valid_loss.")
    @Argument(help: "Export bundle.") var model: String
    @OptionGroup var folder: ImageFolderOptions
    @Option(help: "Fashion-MNIST IDX folder when no --data is given (default: FMNIST_DIR or /usr/share/datasets/fashion-mnist).")
    var fmnist: String?
    @Option(help: "Output folder.") var out = "out"
    @Flag(help: "Also report test-time augmentation's accuracy.") var tta = false
    @Flag(help: "Also write the model's input batches (after the pipeline) and targets to inputs.safetensors, e.g. to evaluate another framework on the same tensors.")
    var saveInputs = false
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?

    func run() throws {
        if let threads { Parallel.threadCount = threads }
        do {
            let learn = try loadLearner(model)
            let pipeline = try InferencePipeline(learn.dls)
            let dl: DataLoader
            if let data = folder.data {
                let ds = try folder.dataBlock(Path(data)).datasets(Path(data), strict: folder.strict)
                let labels = ds.valid.targets.map { ds.vocab[$0[0]] }
                dl = try pipeline.testDL(ds.valid.items, labels: labels, batchSize: folder.bs ?? 64, maxPixels: folder.maxPixels,
                                         workers: folder.workers ?? ProcessInfo.processInfo.activeProcessorCount)
            } else {
                let fm = try FashionMNIST(directory: fmnist)
                let n = fm.testImages.shape[0], pixels = fm.testImages.contiguous().scalars(as: UInt8.self)
                let images = (0..<n).map { Image(width: 28, height: 28, channels: 1, pixels: Array(pixels[($0 * 784)..<(($0 + 1) * 784)])) }
                let labels = fm.testLabels.scalars(as: Int64.self).map { FashionMNIST.classes[Int($0)] }
                dl = try pipeline.testDL(images: images, labels: labels, batchSize: folder.bs ?? 256)
            }
            let r = try learn.getPreds(dl, withLoss: true)
            let accuracy = Metric.accuracy.fn(r.preds, r.targets), loss = r.losses.mean().item()
            let ttaAccuracy = tta ? Metric.accuracy.fn(try learn.tta(dl).preds, r.targets) : Double.nan
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try Safetensors.write(["preds": r.preds, "targets": r.targets], metadata: ["vocab": pipeline.vocab.joined(separator: "\n")],
                                  to: out + "/preds.safetensors")
            if saveInputs { try saveBatches(dl, batches: dl.count, to: out + "/inputs.safetensors") }
            let interp = try ClassificationInterpretation(preds: r.preds, targets: r.targets, losses: r.losses, vocab: pipeline.vocab)
            try interp.plotConfusionMatrix(to: out + "/confusion_matrix.png")
            let confused = interp.mostConfused()
            try (["actual\tpredicted\tcount"] + confused.map { "\($0.actual)\t\($0.predicted)\t\($0.count)" }).joined(separator: "\n")
                .appending("\n").write(toFile: out + "/most_confused.txt", atomically: true, encoding: .utf8)
            print(String(format: "%d items  accuracy %.4f  error_rate %.4f  valid_loss %.4f", r.targets.count, accuracy, 1 - accuracy, loss))
            for c in confused.prefix(5) { print("  \(c.actual) → \(c.predicted): \(c.count)") }
            print(jsonLine(["model": model, "items": r.targets.count, "accuracy": Rounded(accuracy, 4), "error_rate": Rounded(1 - accuracy, 4),
                            "valid_loss": Rounded(loss, 4), "tta_accuracy": Rounded(ttaAccuracy, 4)]))
        } catch { throw fail(error) }
    }
}

/// `swiftai export MODEL`: convert an export bundle (half-precision weights, ONNX).
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an export bundle: --onnx FILE (ONNX opset 17, dynamic batch, normalised NCHW input → logits) and/or --dtype float16|bfloat16 --to FILE (half-size weights).")
    @Argument(help: "Export bundle.") var model: String
    @Option(help: "Write the model as ONNX here.") var onnx: String?
    @Option(help: "Weights' precision of the bundle written with --to: float32, float16 or bfloat16.") var dtype = "float16"
    @Option(help: "Write a bundle with --dtype weights here.") var to: String?

    func validate() throws {
        guard onnx != nil || to != nil else { throw ValidationError("give --onnx FILE and/or --to FILE") }
        guard ExportDType(rawValue: dtype) != nil else { throw ValidationError("--dtype must be float32, float16 or bfloat16") }
    }

    func run() throws {
        do {
            let learn = try loadLearner(model, fused: false)
            let before = try FileManager.default.attributesOfItem(atPath: model)[.size] as? Int ?? 0
            if let onnx {
                try learn.exportONNX(to: onnx)
                let bytes = try FileManager.default.attributesOfItem(atPath: onnx)[.size] as? Int ?? 0
                print(jsonLine(["onnx": onnx, "bytes": bytes]))
            }
            if let to {
                let dt = ExportDType(rawValue: dtype)!
                try learn.export(to: to, dtype: dt)
                let after = try FileManager.default.attributesOfItem(atPath: to)[.size] as? Int ?? 0
                print(jsonLine(["model": to, "dtype": dt.rawValue, "bytes": after, "ratio": Rounded(Double(after) / Double(max(before, 1)), 3)]))
            }
        } catch { throw fail(error) }
    }
}

/// `s` with JSON's string escapes (backslash, quote, control characters).
func jsonEscaped(_ s: String) -> String {
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case _ where ch.value < 0x20: out += String(format: "\\u%04x", ch.value)
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
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
