import Foundation
import Testing
@testable import SwiftAICore
import SwiftAITestSupport

@Suite struct SafetensorsTests {
    func tempPath(_ name: String) -> String {
        NSTemporaryDirectory() + "swiftai-test-\(getpid())-\(name).safetensors"
    }

    @Test func roundTripsEveryDType() throws {
        let base = Tensor([1.5, -2, 0.25, 7, 0, 3], shape: [2, 3])
        var tensors: [String: Tensor] = [:]
        for dt in DType.allCases { tensors["t_\(dt)"] = base.abs().to(dt) }
        tensors["strided"] = base.transpose(0, 1)
        tensors["scalar"] = Tensor(scalar: Float(4))
        let path = tempPath("roundtrip")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Safetensors.write(tensors, metadata: ["format": "pt", "note": "ünïcode"], to: path)
        let (back, meta) = try Safetensors.read(path: path)
        #expect(meta == ["format": "pt", "note": "ünïcode"])
        #expect(Set(back.keys) == Set(tensors.keys))
        for (k, v) in tensors {
            #expect(back[k]!.dtype == v.dtype && back[k]!.shape == v.shape, "\(k)")
            #expect(back[k]!.doubles == v.doubles, "\(k)")
        }
        // Header length is a multiple of 8 and data follows immediately.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(n % 8 == 0)
    }

    @Test func readsPyTorchFixtures() throws {
        guard let f = try loadFixture("optim") else { return }
        #expect(f.tensors["schedule_onecycle.lr"]!.dtype == .float64)
        #expect(f.tensors["optim_sgd.trajectory"]!.shape == [10, 4, 3])
    }

    func header(_ json: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        var d = Data()
        var n = (declaredLength ?? UInt64(json.utf8.count)).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(Data(json.utf8))
        d.append(contentsOf: data)
        return d
    }

    @Test func badFilesThrowTypedErrors() throws {
        #expect(throws: SafetensorsError.truncated("3 bytes, the 8-byte header length is missing")) {
            try Safetensors.decode(Data([1, 2, 3]))
        }
        #expect(throws: SafetensorsError.headerTooLarge(1 << 40)) {
            try Safetensors.decode(header("{}", declaredLength: 1 << 40))
        }
        #expect(throws: SafetensorsError.self) { try Safetensors.decode(header("{}", declaredLength: 100)) }
        #expect(throws: SafetensorsError.malformedHeader("not valid JSON")) { try Safetensors.decode(header("{nope")) }
        #expect(throws: SafetensorsError.malformedHeader("top level is not a JSON object")) {
            try Safetensors.decode(header("[1]"))
        }
        #expect(throws: SafetensorsError.unsupportedDType(tensor: "x", dtype: "F8_E4M3")) {
            try Safetensors.decode(header(#"{"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: [0]))
        }
        // Data section shorter than the offsets claim.
        #expect(throws: SafetensorsError.self) {
            try Safetensors.decode(
                header(#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [0, 0, 0, 0]))
        }
        // Size disagreeing with the shape, negative shape, overlapping tensors, bad metadata.
        for bad in [
            #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            #"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"#
                + #""y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            #"{"__metadata__":{"a":1}}"#,
            #"{"x":{"dtype":"F32","shape":[1]}}"#
        ] {
            #expect(throws: SafetensorsError.self, "\(bad)") {
                try Safetensors.decode(header(bad, data: [UInt8](repeating: 0, count: 8)))
            }
        }
        #expect(throws: SafetensorsError.cannotRead(path: "/nonexistent/x.safetensors", reason: "no such file")) {
            try Safetensors.read(path: "/nonexistent/x.safetensors")
        }
        #expect(throws: SafetensorsError.self) {
            try Safetensors.write(["a": Tensor.ones([1])], to: "/nonexistent-dir/x.safetensors")
        }
    }

    /// Found by review of Fuzz/ (docs/fuzzing.md): no elements, but sizes whose product overflows — making the
    /// tensor's strides used to trap. A 0 beside small sizes still reads.
    @Test func emptyShapeWithHugeSizesIsAnError() throws {
        let huge = #"{"a":{"dtype":"F32","shape":[0,4000000000000000,4000000000000000],"data_offsets":[0,0]}}"#
        let e = #expect(throws: SafetensorsError.self) { try Safetensors.decode(header(huge)) }
        #expect(e.map { "\($0)" }?.contains("is larger than the file") == true)
        let empty = try Safetensors.decode(header(#"{"a":{"dtype":"F32","shape":[0,3,1000],"data_offsets":[0,0]}}"#))
        #expect(empty.tensors["a"]!.shape == [0, 3, 1000])
    }

    @Test func truncatedRealFileThrows() throws {
        let path = tempPath("trunc")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Safetensors.write(["w": Tensor.randn([64, 64])], to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        for cut in [4, 20, bytes.count - 1] {
            #expect(throws: SafetensorsError.self) { try Safetensors.decode(bytes.prefix(cut)) }
        }
    }
}
