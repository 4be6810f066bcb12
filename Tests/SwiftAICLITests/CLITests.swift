import Foundation
import Testing

/// The folder of the one training run the tests share (removed when the test process exits).
private let sharedPath = NSTemporaryDirectory() + "swiftai-cli-tests-\(getpid())"

/// One tiny training run, shared read-only by the tests that need an export bundle: resnet18 from random weights,
/// one epoch on eight 32×32 images.
enum Trained {
    static let directory = URL(fileURLWithPath: sharedPath)
    static let bundle = directory.appendingPathComponent("run/model.safetensors").path
    static let images = directory.appendingPathComponent("images").path

    static let run = Task<CLIRun, Error> {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: sharedPath) }
        try CLI.writeImageFolder(at: directory.appendingPathComponent("images"))
        return try await CLI.run(
            ["train", "--data", "images", "--arch", "resnet18", "--no-pretrained", "--epochs", "1"]
                + tinyImages + ["--bs", "4", "--out", "run"], in: directory, timeout: 300)
    }

    /// `Trained.bundle` once the run has succeeded.
    static func model() async throws -> String {
        let r = try await run.value
        try #require(r.status == 0, "\(r)")
        return bundle
    }
}

/// The image options that keep the tiny folder tiny: 32×32 inputs, two of eight images for validation.
let tinyImages = ["--presize", "32", "--size", "32", "--valid-pct", "0.25"]

/// `swiftai` run as a subprocess: the main commands' JSON lines and exit codes on good and bad input. Exit codes:
/// 0 success, 1 a failure while running (`error: …` on stderr), 64 a bad command line (ArgumentParser's usage error).
@Suite final class CLITests {
    let dir: URL

    init() throws { dir = try CLI.temporaryDirectory("swiftai-cli") }

    deinit { try? FileManager.default.removeItem(at: dir) }

    func swiftai(_ arguments: String...) async throws -> CLIRun { try await swiftai(arguments) }

    func swiftai(_ arguments: [String]) async throws -> CLIRun { try await CLI.run(arguments, in: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Expects a run to have failed with `status` and `message` on stderr, and no JSON on stdout.
    func expectFailure(
        _ r: CLIRun, _ status: Int32, _ message: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            r.status == status && r.stderr.contains(message) && r.jsonLines.isEmpty, "\(r)",
            sourceLocation: sourceLocation)
    }

    @Test func helpListsEveryCommand() async throws {
        let r = try await swiftai("--help")
        #expect(r.status == 0, "\(r)")
        for name in [
            "train", "ensemble", "lr-find", "summary", "predict", "evaluate", "export", "serve", "prune",
            "quantize", "data", "bench"
        ] {
            #expect(r.stdout.contains("  \(name) "), "\(name) missing from:\n\(r.stdout)")
        }
        expectFailure(try await swiftai("fit"), 64, "Error: Unexpected argument 'fit'")
    }

    @Test func train() async throws {
        let r = try await Trained.run.value
        #expect(r.status == 0, "\(r)")
        let json = r.json
        #expect(json["model"] as? String == "resnet18" && json["epochs"] as? Int == 1, "\(r)")
        #expect((0...1).contains(json["accuracy"] as? Double ?? -1) && json["tta_accuracy"] is NSNull, "\(r)")
        for file in ["model.safetensors", "preds.safetensors", "history.csv", "loss.png", "confusion_matrix.png"] {
            #expect(FileManager.default.fileExists(atPath: Trained.directory.path + "/run/" + file), "\(file)")
        }
    }

    @Test(
        arguments: [
            (["--epochs", "0"], 64, "Error: --epochs, --fine-tune and --bs must be positive"),
            (["--arch", "resnet99"], 64, "Error: The value 'resnet99' is invalid for '--arch <arch>'"),
            (["--epochs", "two"], 64, "Error: The value 'two' is invalid for '--epochs <epochs>'"),
            (["--data", "images", "--arch", "cnn"], 64, "Error: the lesson's models (cnn, resnet, wide) take"),
            (["--data", "missing", "--arch", "resnet18", "--no-pretrained"], 1, "error: no folder at missing"),
            (["--arch", "cnn", "--fmnist", "missing"], 1, "error: dataset file not found: missing/train-images")
        ] as [([String], Int32, String)])
    func trainRejects(_ arguments: [String], status: Int32, message: String) async throws {
        try CLI.writeImageFolder(at: dir.appendingPathComponent("images"))
        let r = try await swiftai(["train", "--epochs", "1", "--out", "run"] + arguments)
        expectFailure(r, status, message)
        #expect(!FileManager.default.fileExists(atPath: path("run/model.safetensors")))
    }

    /// A run killed (`kill -9`) after its first checkpoint, or stopped by Ctrl-C mid-epoch, and continued with
    /// `--resume` ends with the uninterrupted run's weights, bit for bit; changed arguments are refused.
    @Test(arguments: [SIGKILL, SIGINT])
    func resumeEndsAsTheUninterruptedRun(_ signal: Int32) async throws {
        try CLI.writeImageFolder(at: dir.appendingPathComponent("images"))
        // Ctrl-C between fine_tune's two fits would find no fit to stop: that run has no frozen phase.
        let args =
            [
                "train", "--data", "images", "--arch", "resnet18", "--no-pretrained", "--fine-tune", "2",
                "--freeze-epochs", signal == SIGINT ? "0" : "1"
            ] + tinyImages + ["--bs", "2"]
        let full = try await CLI.run(args + ["--out", "full"], in: dir, timeout: 300)
        try #require(full.status == 0, "\(full)")
        let cut = try await CLI.run(
            args + ["--out", "cut"], in: dir, timeout: 300,
            signal: (signal, "cut/checkpoint.safetensors", false))
        if signal == SIGKILL {
            #expect(cut.status == SIGKILL && !cut.timedOut, "\(cut)")
        } else {
            #expect(cut.status == 0 && cut.stdout.contains("stopped: interrupted"), "\(cut)")
        }
        let refused = try await swiftai(["train", "--resume", "cut", "--epochs", "7"])
        expectFailure(refused, 1, "the run started with no --epochs; this asks for --epochs 7")
        let resumed = try await CLI.run(
            ["train", "--resume", "cut", "--fine-tune", "2", "--out", "cut"], in: dir,
            timeout: 300)
        try #require(resumed.status == 0, "\(resumed)\n\(cut)")
        #expect(resumed.json["epochs"] as? Int == full.json["epochs"] as? Int, "\(resumed)")
        let a = try Data(contentsOf: dir.appendingPathComponent("full/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("cut/model.safetensors"))
        #expect(CLI.weightBytes(a) == CLI.weightBytes(b), "resumed weights differ from the uninterrupted run's")
    }

    @Test func predict() async throws {
        let model = try await Trained.model()
        let images = Trained.images
        let r = try await swiftai("predict", model, images + "/a/gray8.png", images + "/b/rgb16.png", "--top-k", "2")
        #expect(r.status == 0 && r.jsonLines.count == 2, "\(r)")
        for line in r.jsonLines {
            let probs = line["probs"] as? [String: Double] ?? [:]
            #expect(["a", "b"].contains(line["label"] as? String ?? "") && probs.count == 2, "\(r)")
        }
        // An unreadable image gets its JSON error line and exit code 1; the others are still classified.
        let bad = try await swiftai("predict", model, images + "/a/gray8.png", path("missing.png"))
        #expect(bad.status == 1 && bad.jsonLines.count == 2, "\(bad)")
        #expect(
            bad.jsonLines.first?["label"] != nil && bad.jsonLines.last?["file"] as? String == path("missing.png")
                && bad.jsonLines.last?["error"] is String && bad.stderr.contains("error: "), "\(bad)")
        expectFailure(
            try await swiftai("predict", model, images + "/a/gray8.png", "--top-k", "0"), 64,
            "Error: --top-k must be at least 1")
    }

    @Test func predictRejectsBadBundles() async throws {
        let model = try await Trained.model()
        let image = Trained.images + "/a/gray8.png"
        expectFailure(
            try await swiftai("predict", path("missing.safetensors"), image), 1,
            "error: cannot read safetensors file '\(path("missing.safetensors"))': no such file")
        try Data("not a safetensors file".utf8).write(to: dir.appendingPathComponent("garbage.safetensors"))
        expectFailure(
            try await swiftai("predict", path("garbage.safetensors"), image), 1,
            "error: safetensors header claims")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: model))
        try bytes.prefix(bytes.count / 2).write(to: dir.appendingPathComponent("truncated.safetensors"))
        expectFailure(
            try await swiftai("predict", path("truncated.safetensors"), image), 1,
            "error: safetensors file is truncated")
    }

    @Test func evaluate() async throws {
        let model = try await Trained.model()
        let r = try await CLI.run(["evaluate", model, "--data", Trained.images, "--out", "eval"] + tinyImages, in: dir)
        #expect(r.status == 0 && r.json["model"] as? String == model && r.json["items"] as? Int == 2, "\(r)")
        #expect((0...1).contains(r.json["accuracy"] as? Double ?? -1) && r.json["valid_loss"] is Double, "\(r)")
        for file in ["preds.safetensors", "confusion_matrix.png", "most_confused.txt"] {
            #expect(FileManager.default.fileExists(atPath: path("eval/" + file)), "\(file)")
        }
        expectFailure(
            try await swiftai("evaluate", model, "--data", "missing", "--out", "eval2"), 1,
            "error: no folder at missing")
    }

    @Test func export() async throws {
        let model = try await Trained.model()
        let r = try await swiftai(
            "export", model, "--onnx", "model.onnx", "--dtype", "float16",
            "--to", "half.safetensors")
        #expect(r.status == 0 && r.jsonLines.count == 2, "\(r)")
        #expect(
            r.jsonLines.first?["onnx"] as? String == "model.onnx" && (r.jsonLines.first?["bytes"] as? Int ?? 0) > 0,
            "\(r)")
        let ratio = r.json["ratio"] as? Double ?? 0
        #expect(r.json["dtype"] as? String == "float16" && (0.4...0.6).contains(ratio), "\(r)")
        #expect(try await swiftai("predict", "half.safetensors", Trained.images + "/a/gray8.png").status == 0)
        expectFailure(try await swiftai("export", model), 64, "Error: give --onnx FILE and/or --to FILE")
        expectFailure(
            try await swiftai("export", model, "--dtype", "int4", "--to", "x.safetensors"), 64,
            "Error: --dtype must be float32, float16 or bfloat16")
        expectFailure(
            try await swiftai("export", "missing.safetensors", "--to", "x.safetensors"), 1,
            "error: cannot read safetensors file 'missing.safetensors'")
    }

    @Test func quantize() async throws {
        let model = try await Trained.model()
        let r = try await swiftai(
            "quantize", model, "--calib", Trained.images, "--batches", "1", "--bs", "4",
            "--to", "int8.safetensors")
        #expect(r.status == 0 && r.json["scheme"] as? String == "static", "\(r)")
        #expect(r.json["observer"] as? String == "histogram", "\(r)")
        #expect((r.json["int8_layers"] as? Int ?? 0) > 0 && (r.json["bytes"] as? Int ?? 0) > 0, "\(r)")
        #expect(try await swiftai("predict", "int8.safetensors", Trained.images + "/b/rgb16.png").status == 0)
        expectFailure(
            try await swiftai("quantize", "int8.safetensors", "--dynamic", "--to", "again.safetensors"), 1,
            "error: 'int8.safetensors' is already an int8 bundle")
        expectFailure(
            try await swiftai("quantize", model, "--to", "x.safetensors"), 64,
            "Error: post-training quantization needs --calib")
        expectFailure(
            try await swiftai("quantize", model, "--calib", "missing", "--to", "x.safetensors"), 1,
            "error: no folder at missing")
    }

    @Test func dataSummary() async throws {
        let images = dir.appendingPathComponent("images")
        try CLI.writeImageFolder(at: images)
        let r = try await swiftai(["data", "summary", "--data", "images"] + tinyImages)
        #expect(r.status == 0 && r.json["items"] as? Int == 8 && r.json["classes"] as? Int == 2, "\(r)")
        #expect(r.json["train"] as? Int == 6 && r.json["valid"] as? Int == 2 && r.json["error"] == nil, "\(r)")
        // An undecodable file is listed as skipped; --strict stops at it.
        try Data("not a PNG".utf8).write(to: images.appendingPathComponent("a/broken.png"))
        let skipped = try await swiftai(["data", "summary", "--data", "images"] + tinyImages)
        #expect(skipped.status == 0 && skipped.json["skipped"] as? [String] == ["broken.png"], "\(skipped)")
        expectFailure(
            try await swiftai(["data", "summary", "--data", "images", "--strict"] + tinyImages), 1,
            "error: images/a/broken.png is not a JPEG or PNG image")
        // Nothing loadable: the JSON line carries the error, exit code 1.
        for name in ["a/1.png", "a/2.png", "b/3.png", "b/4.png"] {
            let url = dir.appendingPathComponent("broken/" + name)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(),
                withIntermediateDirectories: true)
            try Data("not a PNG".utf8).write(to: url)
        }
        let broken = try await swiftai(["data", "summary", "--data", "broken"] + tinyImages)
        let listed = (broken.json["skipped"] as? [String])?.sorted()
        #expect(
            broken.status == 1 && listed == ["1.png", "2.png", "3.png", "4.png"]
                && (broken.json["error"] as? String)?.isEmpty == false, "\(broken)")
        expectFailure(try await swiftai("data", "summary", "--data", "missing"), 1, "error: no folder at missing")
        expectFailure(
            try await swiftai("data", "summary", "--data", "images", "--valid-pct", "x"), 64,
            "Error: The value 'x' is invalid for '--valid-pct <valid-pct>'")
    }
}
