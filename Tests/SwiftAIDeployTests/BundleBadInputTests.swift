import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAIDeploy
import SwiftAILearner
import SwiftAINN
import SwiftAIVision
import SwiftAITestSupport

/// A small valid bundle (the lesson's cnn) to tamper with.
private func validBundle() throws -> (path: String, bytes: Data) {
    let learn = Learner(
        model: FashionMNISTModel.cnn.make(generator: Generator(seed: 1)),
        dls: InferencePipeline.fashionMNIST().dataLoaders())
    learn.modelSpec = .lesson(.cnn)
    let path = try makeTemporaryDirectory() + "/cnn.safetensors"
    try learn.export(to: path, pipeline: .fashionMNIST())
    return (path, try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// `bytes` with its JSON header edited by `edit` (the data section unchanged).
private func editedHeader(_ bytes: Data, _ edit: (inout [String: Any]) -> Void) -> Data {
    let n = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    var header = try! JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + n))) as! [String: Any]
    edit(&header)
    var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
    var out = Data()
    var len = UInt64(json.count).littleEndian
    withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
    return out + json + bytes.subdata(in: (8 + n)..<bytes.count)
}

/// Edits one metadata JSON value.
private func editedMetadata(_ bytes: Data, _ key: String, _ edit: @escaping (inout Any) -> Void) -> Data {
    editedHeader(bytes) { h in
        var meta = h["__metadata__"] as! [String: String]
        var value = try! JSONSerialization.jsonObject(with: Data(meta[key]!.utf8), options: [.fragmentsAllowed])
        edit(&value)
        meta[key] = String(
            decoding: try! JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]), as: UTF8.self)
        h["__metadata__"] = meta
    }
}

/// Writes `bytes` next to `base` and returns the error loading it gives (nil when it loads).
private func loadError(_ bytes: Data, near base: String) -> Error? {
    let path = base + ".tampered.safetensors"
    try! bytes.write(to: URL(fileURLWithPath: path))
    do { _ = try loadLearner(path); return nil } catch { return error }
}

private func expectError(_ e: Error?, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(
        e != nil && "\(e!)".contains(text), "got \(e.map { "\($0)" } ?? "no error"), expected one mentioning '\(text)'",
        sourceLocation: sourceLocation)
}

@Suite struct BundleBadInputTests {
    @Test func damagedFilesAreTypedErrors() throws {
        let (path, bytes) = try validBundle()
        #expect(loadError(bytes, near: path) == nil)
        expectError(loadError(bytes.prefix(bytes.count / 2), near: path), contains: "truncated")
        var huge = bytes
        huge.replaceSubrange(0..<8, with: [0, 0, 0, 0, 0, 1, 0, 0])
        expectError(loadError(huge, near: path), contains: "header claims")
        let overlapping = editedHeader(bytes) { h in
            var e = h["0.0.weight"] as! [String: Any]
            e["data_offsets"] = (h["0.1.bias"] as! [String: Any])["data_offsets"]
            e["shape"] = (h["0.1.bias"] as! [String: Any])["shape"]
            h["0.0.weight"] = e
        }
        expectError(loadError(overlapping, near: path), contains: "overlaps")
        let pastEnd = editedHeader(bytes) { h in
            var e = h["4.weight"] as! [String: Any]
            e["data_offsets"] = [bytes.count, bytes.count + 4]
            h["4.weight"] = e
        }
        expectError(loadError(pastEnd, near: path), contains: "truncated")
        expectError(loadError(Data(), near: path), contains: "truncated")
        #expect(throws: SafetensorsError.self) { _ = try loadLearner(path + ".missing") }
    }

    @Test func tensorsDisagreeingWithTheDescriptionAreRefused() throws {
        let (path, bytes) = try validBundle()
        let wrongDType = editedHeader(bytes) { h in
            var e = h["4.weight"] as! [String: Any]
            e["dtype"] = "I32"
            h["4.weight"] = e
        }
        expectError(loadError(wrongDType, near: path), contains: "'4.weight' is int32")
        let wrongShape = editedHeader(bytes) { h in
            var e = h["4.weight"] as! [String: Any]
            e["shape"] = Array((e["shape"] as! [Int]).reversed())
            h["4.weight"] = e
        }
        expectError(loadError(wrongShape, near: path), contains: "'4.weight'")
        let missing = editedHeader(bytes) { h in h["4.bias"] = nil }
        expectError(loadError(missing, near: path), contains: "'4.bias'")
        let otherModel = editedMetadata(bytes, "model") { m in m = ["kind": "lesson", "arch": "resnet"] }
        expectError(loadError(otherModel, near: path), contains: "is missing")
    }

    @Test func descriptionsFromFilesAreValidatedBeforeUse() throws {
        let (path, bytes) = try validBundle()
        let unknownArch = editedMetadata(bytes, "model") { m in
            m = ["kind": "torchvision", "arch": "resnet9000", "n_in": 1, "n_out": 10]
        }
        expectError(loadError(unknownArch, near: path), contains: "unknown architecture 'resnet9000'")
        let enormous = editedMetadata(
            editedMetadata(bytes, "vocab") { v in v = (0..<100_000).map { "c\($0)" } }, "model"
        ) { m in
            m = [
                "kind": "vision_learner", "arch": "resnet18", "n_in": 1, "n_out": 100_000, "cut": -2,
                "lin_ftrs": [16_384],
                "ps": 0.5, "concat_pool": true, "first_bn": true, "bn_final": false, "y_range": NSNull()
            ]
        }
        expectError(loadError(enormous, near: path), contains: "parameters but the file holds only")
        let bigBody = editedMetadata(bytes, "model") { m in
            m = ["kind": "torchvision", "arch": "resnet152", "n_in": 1, "n_out": 10]
        }
        expectError(loadError(bigBody, near: path), contains: "needs at least 58158026 parameters")
        let badTransform = editedMetadata(bytes, "pipeline") { p in
            var d = p as! [String: Any]
            d["batch_tfms"] = [["type": "Exec", "cmd": "rm -rf /"]]
            p = d
        }
        expectError(loadError(badTransform, near: path), contains: "unknown batch transform 'Exec'")
        let hugeResize = editedMetadata(bytes, "pipeline") { p in
            var d = p as! [String: Any]
            d["item_tfms"] = [
                ["type": "Resize", "height": 1_000_000, "width": 28, "method": "squish", "pad_mode": "zeros"]
            ]
            p = d
        }
        expectError(loadError(hugeResize, near: path), contains: "'height' must be an integer in 1…8192")
        let badVocab = editedMetadata(bytes, "vocab") { v in v = ["only one"] }
        expectError(loadError(badVocab, near: path), contains: "vocab")
        let future = editedHeader(bytes) { h in
            var meta = h["__metadata__"] as! [String: String]
            meta["format_version"] = "99"
            h["__metadata__"] = meta
        }
        expectError(loadError(future, near: path), contains: "format version 99")
    }

    @Test func prunedWidthsAreValidatedAgainstTheTensors() throws {
        let (path, bytes) = try validBundle()
        func widths(_ w: Any) -> Data {
            editedMetadata(bytes, "model") { m in
                var d = m as! [String: Any]
                d["widths"] = w
                m = d
            }
        }
        expectError(
            loadError(widths(["0.0": 4]), near: path),
            contains: "tensor '0.0.weight' is float32 [8, 1, 3, 3], the description needs float32 [4, 1, 3, 3]")
        expectError(
            loadError(widths(["4": 4]), near: path), contains: "'widths' names '4', which is not a prunable convolution"
        )
        expectError(loadError(widths(["1.0": 17]), near: path), contains: "'widths.1.0' must be an integer in 1…16")
        let bigBody = editedMetadata(bytes, "model") { m in
            let all = ModelSpec.resnet(.resnet152, nIn: 1, nOut: 10).prunableChannels.map { ($0.conv, 1) }
            m = [
                "kind": "torchvision", "arch": "resnet152", "n_in": 1, "n_out": 10,
                "widths": Dictionary(uniqueKeysWithValues: all)
            ]
        }
        expectError(loadError(bigBody, near: path), contains: "parameters but the file holds only")
    }

    @Test func otherFilesAreNamedForWhatTheyAre() throws {
        let (path, _) = try validBundle()
        let plain = path + ".plain.safetensors"
        try Safetensors.write(FashionMNISTModel.cnn.make(generator: Generator(seed: 1)).stateDict(), to: plain)
        expectError(Result(catching: { try loadLearner(plain) }).failure, contains: "without SwiftAI's export metadata")
        if let dir = fixturesDirectory {
            expectError(
                Result(catching: { try loadLearner(dir + "/tv_basic_1111.pth") }).failure, contains: "PyTorch .pth file"
            )
        }
    }

    /// `init(data:name:)` (what Fuzz/ drives) checks bytes as `init(path:)` checks the file.
    @Test func bytesAreCheckedAsFilesAre() throws {
        let (path, bytes) = try validBundle()
        let bundle = try ExportBundle(data: bytes, name: "memory")
        #expect(bundle.spec.json["arch"] as? String == "cnn" && bundle.pipeline.vocab.count == 10)
        for (data, text) in [
            (Data([0x80, 0x02, 0x7D]), "PyTorch .pth file"), (Data([0x50, 0x4B, 0x03, 0x04]), "PyTorch .pth file"),
            (bytes.prefix(100), "truncated"), (Data(), "truncated")
        ] {
            expectError(Result(catching: { try ExportBundle(data: data, name: "memory") }).failure, contains: text)
        }
        expectError(
            Result(catching: { try ExportBundle(data: Data([0x80]), name: "x.pth") }).failure,
            contains: "'x.pth' is not a SwiftAI export bundle")
        #expect(throws: SafetensorsError.cannotRead(path: path + ".missing", reason: "no such file")) {
            try ExportBundle(path: path + ".missing")
        }
    }
}

extension Result where Failure == Error {
    var failure: Error? {
        if case let .failure(e) = self { return e }
        return nil
    }
}
