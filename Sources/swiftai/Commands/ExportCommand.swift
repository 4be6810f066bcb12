import ArgumentParser
import Foundation
import SwiftAIDeploy

/// `swiftai export MODEL`: convert an export bundle (half-precision weights, ONNX).
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: """
            Convert an export bundle: --onnx FILE (ONNX opset 17, dynamic batch, normalised NCHW input → logits) \
            and/or --dtype float16|bfloat16 --to FILE (half-size weights).
            """)
    @OptionGroup var bundle: BundleArgument
    @Option(help: "Write the model as ONNX here.") var onnx: String?
    @Option(help: "Weights' precision of the bundle written with --to: float32, float16 or bfloat16.")
    var dtype = "float16"
    @Option(help: "Write a bundle with --dtype weights here.") var to: String?

    func validate() throws {
        guard onnx != nil || to != nil else { throw ValidationError("give --onnx FILE and/or --to FILE") }
        guard ExportDType(rawValue: dtype) != nil else {
            throw ValidationError("--dtype must be float32, float16 or bfloat16")
        }
    }

    func run() throws {
        let learn = try bundle.load(fused: false)
        let before = try fileSize(bundle.model)
        if let onnx {
            try learn.exportONNX(to: onnx)
            print(jsonLine(["onnx": onnx, "bytes": try fileSize(onnx)]))
        }
        if let to {
            let dt = ExportDType(rawValue: dtype)!
            try learn.export(to: to, dtype: dt)
            let after = try fileSize(to)
            print(
                jsonLine([
                    "model": to, "dtype": dt.rawValue, "bytes": after,
                    "ratio": Rounded(Double(after) / Double(max(before, 1)), 3)
                ]))
        }
    }
}

/// The size of the file at `path`, in bytes.
func fileSize(_ path: String) throws -> Int {
    try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
}
