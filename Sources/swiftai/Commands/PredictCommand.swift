import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIDeploy
import SwiftAILearner
import SwiftAIVision

/// `swiftai predict MODEL IMAGE…`: classify image files with an export bundle.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify images with an export bundle (model.safetensors of `swiftai train --out`).",
        discussion: """
            Prints a table, then one JSON line per image: {"file":…,"label":…,"probs":{top-k classes}}. Unreadable \
            images get {"file":…,"error":…} and exit code 1.
            """)
    @OptionGroup var bundle: BundleArgument
    @Argument(help: "Image files (JPEG or PNG).") var images: [String]
    @Flag(help: "Test-time augmentation (fastai's tta: 4 augmented passes, beta 0.25).") var tta = false
    @Option(help: "Classes listed per image.") var topK = 3
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give one or more image files") }
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
    }

    func run() throws {
        threads.apply()
        let learn = try bundle.load()
        let pipeline = try InferencePipeline(learn.dls)
        var decoded: [(String, Image)] = [], failed: [(String, String)] = []
        for path in images {
            do {
                decoded.append((path, try Image.read(path, mode: pipeline.mode)))
            } catch {
                failed.append((path, "\(error)"))
            }
        }
        if !decoded.isEmpty {
            let dl = try pipeline.testDL(images: decoded.map(\.1))
            let preds = tta ? try learn.tta(dl).preds : try learn.getPreds(dl).preds
            let lines = report(preds, files: decoded.map(\.0), vocab: pipeline.vocab)
            for line in lines { print(line) }
        }
        for (path, why) in failed {
            print(jsonLine(["file": path, "error": why]))
            FileHandle.standardError.write(Data("error: \(why)\n".utf8))
        }
        if !failed.isEmpty { throw ExitCode.failure }
    }

    /// Prints the table of top-k classes; returns the JSON line of each file.
    func report(_ preds: Tensor, files: [String], vocab: [String]) -> [String] {
        let k = min(topK, vocab.count)
        func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: n, withPad: " ", startingAt: 0) }
        print(pad("file", 32) + pad("  label", 22) + "  top \(k)")
        return files.enumerated().map { row, path in
            let p = preds[row].doubles
            let top = p.indices.sorted { p[$0] > p[$1] }.prefix(k)
            let label = vocab[top.first!]
            print(
                pad((path as NSString).lastPathComponent, 32) + "  " + pad(label, 20) + "  "
                    + top.map { "\(vocab[$0]) \(String(format: "%.3f", p[$0]))" }.joined(separator: ", "))
            let probs = top.map { "\"\(jsonEscaped(vocab[$0]))\":\(String(format: "%.6f", p[$0]))" }
            return String(jsonLine(["file": path, "label": label]).dropLast())
                + ",\"probs\":{" + probs.joined(separator: ",") + "}}"
        }
    }
}
