import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAIVision
import SwiftAIDeploy
import SwiftAITestSupport

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// `SWIFTAI_PYTHON` if set, else the package's `.venv` (made by `make setup`); `nil` if it does not exist.
private func pythonInterpreter() -> String? {
    let path =
        ProcessInfo.processInfo.environment["SWIFTAI_PYTHON"]
        ?? packageRoot.appendingPathComponent(".venv/bin/python3").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// Runs a program to completion: its exit status and its stdout and stderr together.
private func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// Exports `model` (in evaluation mode, with random BatchNorm statistics) and has `scripts/onnx_check.py` check the
/// file
/// and compare onnxruntime's outputs with the model's own at batch sizes 1 and 3.
private func expectONNXMatches(
    _ model: Module, inputShape: [Int], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    guard let python = pythonInterpreter() else {
        Issue.record("run `make setup` (creates .venv with onnx and onnxruntime)", sourceLocation: sourceLocation)
        return
    }
    randomiseBatchNorms(model, seed: 11)
    model.eval()
    let dir = try makeTemporaryDirectory("swiftai-onnx")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (modelPath, casesPath) = (dir + "/model.onnx", dir + "/cases.safetensors")
    try exportONNX(model, inputShape: inputShape, to: modelPath)
    var cases: [String: Tensor] = [:]
    for n in [1, 3] {
        let x = randn([n] + inputShape, seed: UInt64(40 + n)).to(.float32)
        cases["input_\(n)"] = x
        cases["expected_\(n)"] = noGrad { model(x) }
    }
    let stateKeys = model.stateDict().keys.filter { !$0.hasSuffix("num_batches_tracked") }.sorted()
    try Safetensors.write(cases, metadata: ["initializers": stateKeys.joined(separator: ",")], to: casesPath)
    let script = packageRoot.appendingPathComponent("scripts/onnx_check.py").path
    let (status, output) = try run(python, [script, modelPath, casesPath])
    #expect(status == 0, "\(what): onnx_check.py exited with \(status):\n\(output)", sourceLocation: sourceLocation)
    print("\(what): \(output)")
}

@Suite struct ONNXTests {
    @Test func lessonModelsMatchOnnxRuntime() throws {
        for kind in FashionMNISTModel.allCases {
            try expectONNXMatches(kind.make(generator: Generator(seed: 1)), inputShape: [1, 28, 28], kind.rawValue)
        }
    }

    @Test func resnet18WithFastaiHeadMatchesOnnxRuntime() throws {
        let g = Generator(seed: 2)
        let model = Sequential(ResNet.resnet18(generator: g).body, createHead(512, 10, generator: g))
        try expectONNXMatches(model, inputShape: [3, 64, 64], "resnet18 + head")
    }

    @Test func groupedBottleneckResNetMatchesOnnxRuntime() throws {
        let model = ResNet(
            block: .bottleneck, layers: [1, 1, 1, 1], numClasses: 5, groups: 2, widthPerGroup: 8,
            generator: Generator(seed: 3))
        try expectONNXMatches(model, inputShape: [3, 32, 32], "bottleneck, groups 2")
    }

    @Test func headWithYRangeMatchesOnnxRuntime() throws {
        let g = Generator(seed: 4)
        let model = Sequential(
            ResBlock(3, 16, stride: 2, act: { GeneralRelu(leak: 0.1, sub: 0.4, maxv: 2) }, generator: g),
            createHead(16, 3, linFtrs: [32], bnFinal: true, yRange: (-1, 3), generator: g))
        try expectONNXMatches(model, inputShape: [3, 20, 20], "head with yRange")
    }

    /// Every other exported layer, with pooling windows that hang over the input (ceil mode, with and without padding).
    @Test func otherLayersMatchOnnxRuntime() throws {
        let g = Generator(seed: 5)
        let pools = Sequential(
            Conv2d(3, 8, kernelSize: 3, padding: 1, generator: g), BatchNorm2d(8), GeneralRelu(sub: 0.2, maxv: 1.5),
            MaxPool2d(3, stride: 2, padding: 1, ceilMode: true),  // 20 → 11 (ragged)
            Conv2d(8, 8, kernelSize: 3, padding: 1, groups: 2, generator: g), LeakyReLU(0.2),
            AvgPool2d(2, ceilMode: true),  // 11 → 6 (ragged)
            AvgPool2d(3, stride: 2, padding: 1, ceilMode: true),  // 6 → 4 (ragged, padded)
            AvgPool2d(3, stride: 1, padding: 1), Dropout2d(0.3), Tanh(),
            AdaptiveConcatPool2d(2), Flatten(startDim: 1, endDim: 2), BatchNorm1d(32),  // [16, 2, 2] → [32, 2]
            Sigmoid(), Flatten(), Identity(), Dropout(0.5), Linear(64, 6, generator: g))
        try expectONNXMatches(pools, inputShape: [3, 20, 20], "pools and activations")
        let global = Sequential(
            Conv2d(3, 4, kernelSize: 3, stride: 2, padding: 1, generator: g), MaxPool2d(2),
            AdaptiveMaxPool2d(1), SigmoidRange(-2, 2), GlobalAvgPool(), BatchNorm1d(4, affine: false),
            Linear(4, 3, bias: false, generator: g))
        try expectONNXMatches(global, inputShape: [3, 9, 9], "global pools")
    }

    @Test func unknownModulesThrowTypedErrorsAndWriteNothing() throws {
        let dir = try makeTemporaryDirectory("swiftai-onnx")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/model.onnx"
        let g = Generator(seed: 6)
        let cases: [(Module, [Int], String)] = [
            (
                Sequential(Conv2d(1, 4, kernelSize: 3, generator: g), Sequential(ReLU(), Lambda { $0 * 2 })), [1, 8, 8],
                "module '1.1' (Lambda)"
            ),
            (FashionMNISTModel.cnn.make(generator: g).fusedForInference(), [1, 28, 28], "module '0.0' (FusedConv2d)"),
            (
                FashionMNISTModel.cnn.make(generator: g), [3, 28, 28],
                "module '0.0' (Conv2d): expects [1, H, W] per sample"
            ),
            (
                Sequential(BatchNorm2d(4, trackRunningStats: false)), [4, 8, 8],
                "module '0' (BatchNorm2d): without running statistics"
            ),
            (Sequential(AdaptiveAvgPool2d(3)), [4, 8, 8], "module '0' (AdaptiveAvgPool2d): output size (3, 3)"),
            (Linear(4, 2, generator: g), [4, 2, 2], "module <model> (Linear): expects [batch, 4] input")
        ]
        for (model, shape, message) in cases {
            let error = #expect(throws: ONNXExportError.self) { try exportONNX(model, inputShape: shape, to: path) }
            #expect(
                error?.description.contains(message) == true,
                "\(error.map { $0.description } ?? "no error") lacks \(message)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        }
        #expect(throws: ONNXExportError.self) { try exportONNX(Identity(), inputShape: [28, 28], to: path) }
    }
}
