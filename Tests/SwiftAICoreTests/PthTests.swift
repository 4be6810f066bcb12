import Foundation
import Testing
@testable import SwiftAICore
import SwiftAITestSupport

/// Files made by scripts/make_pth_fixtures.py, and hostile pickles built here in the legacy stream format.
@Suite struct PthTests {
    func fixture(_ name: String) -> String { committedFixture("SwiftAICoreTests", "pth/" + name) }

    func load(_ name: String, under: String? = nil) throws -> [String: Tensor] {
        try PyTorchWeights.read(path: fixture(name), under: under)
    }

    /// The error reading `name` throws (or records an issue when it reads fine).
    func refusal(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) -> PthError? {
        refusal(of: { try load(name) }, name, sourceLocation: sourceLocation)
    }

    func refusal(
        of body: () throws -> [String: Tensor], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
    ) -> PthError? {
        do {
            _ = try body()
            Issue.record("\(what) was read without error", sourceLocation: sourceLocation)
        } catch let e as PthError {
            return e
        } catch {
            Issue.record("\(what): unexpected error \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    // MARK: The shared fixtures, against torch's own reading in shared_summary.safetensors

    func checkAgainstTorch(_ file: String, _ short: String, sample: String) throws {
        guard let dir = fixturesDirectory else {
            print("note: ../shared/fixtures not found; skipping \(file)")
            return
        }
        let weights = try PyTorchWeights.read(path: dir + "/" + file)
        let (summary, meta) = try Safetensors.read(path: fixture("shared_summary.safetensors"))
        #expect(weights.count == Int(meta["\(short)/count"]!)!)
        for (key, t) in weights {
            #expect(t.dtype.rawValue == meta["\(short)/dtype/\(key)"], "\(key)")
            #expect(t.shape == meta["\(short)/shape/\(key)"]!.split(separator: ",").map { Int($0)! }, "\(key)")
            #expect(t.isContiguous, "\(key)")
            let sum = t.doubles.reduce(0, +), expected = summary["\(short)/sum/\(key)"]!.item()
            #expect(abs(sum - expected) <= 1e-9 * max(1, abs(expected)), "\(key): sum \(sum) vs torch's \(expected)")
        }
        #expect(weights[sample]!.doubles == summary["\(short)/\(sample)"]!.doubles)
    }

    @Test func readsTorchvisionZipStateDict() throws {
        try checkAgainstTorch("tv_basic_1111.pth", "tv", sample: "fc.bias")
        guard let dir = fixturesDirectory else { return }
        let w = try PyTorchWeights.read(path: dir + "/tv_basic_1111.pth")
        #expect(w["bn1.num_batches_tracked"]!.dtype == .int64 && w["bn1.num_batches_tracked"]!.shape == [])
        #expect(w["conv1.weight"]!.shape == [64, 3, 7, 7] && w["fc.weight"]!.shape == [10, 512])
    }

    @Test func readsLegacyStateDict() throws {
        try checkAgainstTorch("lesson_cnn_legacy.pth", "lesson", sample: "0.1.running_var")
    }

    // MARK: Layouts and dtypes

    @Test func copiesViewsToContiguousTensors() throws {
        let w = try load("views.pth")
        let x = (0..<12).map(Double.init)
        #expect(w["x"]!.doubles == x && w["x"]!.shape == [3, 4])
        #expect(w["t"]!.shape == [4, 3] && w["t"]!.doubles == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
        #expect(w["s"]!.shape == [2, 2] && w["s"]!.doubles == [5, 6, 9, 10])
        #expect(w["e"]!.shape == [2, 3] && w["e"]!.doubles == [0, 1, 2, 0, 1, 2])
        #expect(w["row"]!.doubles == [8, 9, 10, 11])
        #expect(w.values.allSatisfy { $0.isContiguous && $0.strides == Tensor.contiguousStrides($0.shape) })
    }

    func checkDTypes(_ w: [String: Tensor]) {
        let expected: [(String, DType, [Int], [Double])] = [
            ("f16", .float16, [4], [0, 0.5, 1, 1.5]), ("bf16", .bfloat16, [4], [0, 3, 6, 9]),
            ("i64", .int64, [3], [-5, 0, 1_099_511_627_776]), ("bool", .bool, [3], [1, 0, 1]),
            ("f64", .float64, [3], [0, 0.25, 0.5]), ("i32", .int32, [2], [-7, 7]), ("u8", .uint8, [3], [0, 200, 255]),
            ("scalar", .int64, [], [3]), ("empty", .float32, [0, 3], [])
        ]
        #expect(w.count == expected.count)
        for (k, dt, shape, values) in expected {
            #expect(
                w[k]?.dtype == dt && w[k]?.shape == shape && w[k]?.doubles == values,
                "\(k): \(String(describing: w[k]))")
        }
        #expect(w["i64"]!.scalars(as: Int64.self)[2] == 1 << 40)
    }

    @Test func readsEveryDType() throws { checkDTypes(try load("dtypes.pth")) }

    @Test func readsZip64Archive() throws { checkDTypes(try load("zip64.pth")) }

    @Test func readsLegacyFormatViewsAndDTypes() throws {
        let w = try load("legacy.pth")
        #expect(w["x"]!.doubles == (0..<12).map(Double.init))
        #expect(w["t"]!.shape == [4, 3] && w["t"]!.doubles == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
        #expect(w["h"]!.dtype == .float16 && w["h"]!.doubles == [0, 1, 2, 3])
        #expect(w["n"]!.dtype == .int64 && w["n"]!.shape == [] && w["n"]!.item() == 7)
    }

    @Test func flattensCheckpointsWithDottedKeys() throws {
        let w = try load("checkpoint.pth")
        #expect(
            Set(w.keys) == [
                "model.weight", "model.bias", "optimizer.state.0.momentum_buffer",
                "optimizer.state.1.momentum_buffer", "params.0", "params.1.0"
            ])
        expectClose(
            w["model.weight"]!, Tensor([-0.1, 0.9, 1.9, 2.9, 3.9, 4.9], shape: [3, 2]).to(.float32),
            "weight after one SGD step")
        #expect(w["optimizer.state.1.momentum_buffer"]!.doubles == [1, 1, 1])
        #expect(w["params.1.0"]!.doubles == [2])
        let model = try load("checkpoint.pth", under: "model")
        #expect(Set(model.keys) == ["weight", "bias"])
        expectClose(model["bias"]!, Tensor([-1.1, -0.1, 0.9]).to(.float32), "bias")
        let e = refusal(of: { try load("checkpoint.pth", under: "ema") }, "under: ema")
        #expect(e.map { "\($0)" }?.contains("'model', 'optimizer', 'params'") == true, "\(String(describing: e))")
    }

    @Test func readsParameters() throws {
        #expect(try load("parameter.pth")["w"]!.doubles == [1, 1])
    }

    // MARK: Hostile and damaged files

    @Test func neverRunsPickledCode() throws {
        let marker = "/tmp/swiftai_pth_pwned"
        try? FileManager.default.removeItem(atPath: marker)
        guard case let .forbiddenGlobal(_, name) = refusal("system_reduce.pth") else {
            Issue.record("not a forbidden global"); return
        }
        #expect(name == "posix.system")
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func refusesPickledModules() {
        let e = refusal("module.pth")
        guard case let .pickledObject(_, global) = e else { Issue.record("\(String(describing: e))"); return }
        #expect(global == "torch.nn.modules.container.Sequential")
        #expect("\(e!)".contains("not a state dict: save `model.state_dict()`"))
    }

    @Test(arguments: [
        ("protocol4.pth", "0x95 (FRAME, protocol 4)"), ("stack_global.pth", "0x93 (STACK_GLOBAL, protocol 4)"),
        ("huge_string.pth", "truncated"), ("short_storage.pth", "record holds 3"),
        ("out_of_bounds.pth", "reach element 5 of a storage of 4"),
        ("offset_past_end.pth", "reach element 4 of a storage of 4"),
        ("huge_stride0.pth", "larger than the file allows"), ("empty_huge_sizes.pth", "larger than the file allows"),
        ("missing_record.pth", "no record 'missing_record/data/9'"),
        ("int8.pth", "torch.CharStorage"), ("bigendian.pth", "big-endian"),
        ("compressed.pth", "compressed (zip method 8)"),
        ("torchscript.pt", "TorchScript archive")
    ])
    func refusesDamagedFiles(name: String, message: String) {
        let e = refusal(name)
        #expect(e.map { "\($0)" }?.contains(message) == true, "\(name): \(String(describing: e))")
    }

    @Test func everyTruncationIsAnError() throws {
        for name in ["dtypes.pth", "legacy.pth"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: fixture(name)))
            for n in 0..<bytes.count {
                #expect(throws: PthError.self, "\(name) cut to \(n) bytes") {
                    try PyTorchWeights.decode(bytes.prefix(n))
                }
            }
        }
    }

    @Test func corruptedBytesNeverCrash() throws {
        for name in ["views.pth", "legacy.pth"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: fixture(name)))
            for i in 0..<bytes.count {
                for v: UInt8 in [0x00, 0xFF, bytes[i] ^ 0x01] {
                    var b = bytes
                    b[i] = v
                    _ = try? PyTorchWeights.decode(b)
                }
            }
        }
    }

    @Test func refusesFilesThatAreNotPyTorch() throws {
        guard case .cannotRead = refusal(of: { try PyTorchWeights.read(path: "/nonexistent.pth") }, "missing file")
        else {
            Issue.record("missing file"); return
        }
        let st = Safetensors.encode(["a": Tensor([1.0])])
        #expect("\(refusal(of: { try PyTorchWeights.decode(st) }, "safetensors")!)".contains("Safetensors.read"))
        guard case .notPyTorch = refusal(of: { try PyTorchWeights.decode(Data("hello world".utf8)) }, "text") else {
            Issue.record("text"); return
        }
    }

    // MARK: Hostile pickles, in the legacy stream format

    /// Magic number, protocol version and system-info pickles, `object`, then `rest` (by default an empty storage-key
    /// list).
    func stream(_ object: [UInt8], info: [UInt8] = [0x7D], rest: [UInt8] = [0x80, 0x02, 0x5D, 0x2E]) -> Data {
        let magic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
        return Data(magic + [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E] + [0x80, 0x02] + info + [0x2E] + object + rest)
    }

    func text(_ s: String) -> [UInt8] {
        let u = Array(s.utf8)
        return [0x58] + withUnsafeBytes(of: UInt32(u.count).littleEndian, Array.init) + u
    }

    func global(_ module: String, _ name: String) -> [UInt8] { Array("c\(module)\n\(name)\n".utf8) }

    func decodeError(_ object: [UInt8], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) -> PthError?
    {
        refusal(of: { try PyTorchWeights.decode(stream(object)) }, what, sourceLocation: sourceLocation)
    }

    @Test func namesForbiddenGlobals() {
        let call = text("touch /tmp/swiftai_pth_pwned") + [0x85, 0x52, 0x2E]
        #expect(
            decodeError(global("os", "system") + call, "os.system")
                == .forbiddenGlobal(file: "<memory>", name: "os.system"))
        #expect(
            decodeError(global("builtins", "eval") + call, "eval")
                == .forbiddenGlobal(file: "<memory>", name: "builtins.eval"))
        #expect(
            decodeError(global("subprocess", "Popen") + call, "Popen")
                == .forbiddenGlobal(file: "<memory>", name: "subprocess.Popen"))
        #expect(
            decodeError(global("__main__", "Net") + [0x29, 0x81, 0x2E], "Net")
                == .pickledObject(file: "<memory>", global: "__main__.Net"))
        #expect(
            decodeError(global("torch._utils", "_rebuild_sparse_tensor") + [0x2E], "sparse")
                == .unsupportedGlobal(file: "<memory>", name: "torch._utils._rebuild_sparse_tensor"))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/swiftai_pth_pwned"))
    }

    @Test func checksLegacyHeaderAndStorageSizes() throws {
        let bigEndian = stream([0x7D, 0x2E], info: [0x7D] + text("little_endian") + [0x89, 0x73])
        #expect(refusal(of: { try PyTorchWeights.decode(bigEndian) }, "big-endian") == .bigEndian(file: "<memory>"))
        // {'w': _rebuild_tensor_v2(('storage', FloatStorage, 'k', 'cpu', 2), 0, (2,), (1,), False, None)}
        let object =
            [0x7D] + text("w") + global("torch._utils", "_rebuild_tensor_v2") + [0x28, 0x28] + text("storage")
            + global("torch", "FloatStorage") + text("k") + text("cpu") + [
                0x4B, 2, 0x74, 0x51, 0x4B, 0, 0x4B, 2, 0x85, 0x4B, 1, 0x85,
                0x89, 0x4E, 0x74, 0x52, 0x73, 0x2E
            ]
        let keys = [0x80, 0x02, 0x5D] + text("k") + [0x61, 0x2E]
        func values(_ numel: UInt8, _ floats: [Float]) -> [UInt8] {
            [numel, 0, 0, 0, 0, 0, 0, 0]
                + floats.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        }
        #expect(try PyTorchWeights.decode(stream(object, rest: keys + values(2, [1.5, -2])))["w"]!.doubles == [1.5, -2])
        if case .badStorageRecord = refusal(
            of: { try PyTorchWeights.decode(stream(object, rest: keys + values(3, [1, 2, 3]))) }, "numel")
        {
        } else {
            Issue.record("storage size differing from the pickle's")
        }
        if case .storageTooShort = refusal(
            of: { try PyTorchWeights.decode(stream(object, rest: keys + values(2, [1]))) }, "short")
        {
        } else {
            Issue.record("short storage")
        }
    }

    @Test func boundsHostileStructures() {
        // 100k lists nested through the memo: flattening stops at 64 levels, and freeing them does not recurse.
        var lists: [UInt8] = [0x5D, 0x72, 0, 0, 0, 0]
        for i in 1...100_000 {
            lists +=
                [0x5D, 0x72] + withUnsafeBytes(of: UInt32(i).littleEndian, Array.init) + [0x61, 0x6A]
                + withUnsafeBytes(of: UInt32(i).littleEndian, Array.init)
        }
        #expect(
            "\(decodeError(lists + [0x6A, 0, 0, 0, 0, 0x2E], "deep lists").map { "\($0)" } ?? "")".contains(
                "nested more than 64 deep"))
        #expect(
            "\(decodeError(lists + [0x30, 0x2E], "POP").map { "\($0)" } ?? "")".contains(
                "unsupported pickle opcode 0x30 (POP)"))
        // A million nested tuples cost a byte each.
        if case .malformedPickle = decodeError(
            [0x29] + [UInt8](repeating: 0x85, count: 1_000_000) + [0x2E], "deep tuples")
        {
        } else {
            Issue.record("deep tuples")
        }
        // 60 levels of dicts that each hold the previous one twice: 2^60 paths.
        var laughs: [UInt8] = [0x7D, 0x71, 0]
        for i in 1...60 {
            laughs +=
                [0x7D, 0x28] + text("a") + [0x68, UInt8(i - 1)] + text("b") + [0x68, UInt8(i - 1), 0x75, 0x71, UInt8(i)]
        }
        #expect(
            "\(decodeError(laughs + [0x2E], "laughs").map { "\($0)" } ?? "")".contains(
                "more often than the file's size allows"))
        // A string claiming 2 GB, a memo read before any write, a stack underflow, a SETITEM below its MARK.
        if case .truncated = decodeError([0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61], "huge string") {
        } else {
            Issue.record("huge string")
        }
        #expect(
            "\(decodeError([0x6A, 0xF0, 0xFF, 0xFF, 0xFF, 0x2E], "memo").map { "\($0)" } ?? "")".contains(
                "memo entry 4294967280"))
        if case .malformedPickle = decodeError([0x52, 0x2E], "underflow") {} else { Issue.record("underflow") }
        if case .malformedPickle = decodeError([0x7D, 0x28] + text("k") + text("v") + [0x28, 0x73, 0x2E], "mark") {
        } else {
            Issue.record("SETITEM below MARK")
        }
        #expect(
            "\(decodeError([0x4B, 3, 0x2E], "int").map { "\($0)" } ?? "")".contains(
                "holds a int, not a dict of tensors"))
    }

    @Test func randomOpcodeSequencesNeverCrash() {
        let ops: [UInt8] = [
            0x28, 0x29, 0x2E, 0x4B, 0x4E, 0x51, 0x52, 0x5D, 0x61, 0x62, 0x65, 0x68, 0x71, 0x73, 0x74,
            0x75, 0x7D, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x81, 0x58, 0x55
        ]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 33)
        }
        for _ in 0..<3000 {
            var object: [UInt8] = [0x80, 0x02]
            for _ in 0..<(next() % 40) {
                object.append(ops[next() % ops.count])
                if next() % 3 == 0 { object.append(UInt8(next() % 4)) }
                if next() % 9 == 0 { object += global("collections", "OrderedDict") }
            }
            _ = try? PyTorchWeights.decode(stream(object + [0x2E]))
        }
    }
}
