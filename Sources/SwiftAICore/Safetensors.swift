import Foundation

/// Why a safetensors file could not be read or written.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case cannotRead(path: String, reason: String)
    case truncated(String)
    case headerTooLarge(Int)
    case malformedHeader(String)
    case unsupportedDType(tensor: String, dtype: String)
    case badTensor(tensor: String, reason: String)
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): return "cannot read safetensors file '\(path)': \(reason)"
        case let .truncated(what): return "safetensors file is truncated: \(what). Re-download or re-save the file."
        case let .headerTooLarge(n):
            return "safetensors header claims \(n) bytes (limit 100 MB): the file is corrupt or not safetensors"
        case let .malformedHeader(why): return "malformed safetensors header: \(why)"
        case let .unsupportedDType(name, dt):
            return
                """
                tensor '\(name)' has dtype \(dt), which SwiftAI does not read (supported: F64, F32, F16, BF16, I64, \
                I32, U8, BOOL)
                """
        case let .badTensor(name, why): return "tensor '\(name)': \(why)"
        case let .cannotWrite(path, reason): return "cannot write safetensors file '\(path)': \(reason)"
        }
    }
}

/// Reading and writing the safetensors format (8-byte little-endian header length, JSON header, raw data).
public enum Safetensors {
    static let headerLimit = 100 << 20

    static func code(_ d: DType) -> String {
        switch d {
        case .float64: return "F64"
        case .float32: return "F32"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        case .int64: return "I64"
        case .int32: return "I32"
        case .uint8: return "U8"
        case .int8: return "I8"
        case .bool: return "BOOL"
        }
    }

    static func dtype(_ code: String) -> DType? {
        DType.allCases.first { Safetensors.code($0) == code }
    }

    /// Reads every tensor and the `__metadata__` strings of a file.
    public static func read(path: String) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        try decode(mappedBytes(path: path))
    }

    /// The bytes of a file (memory-mapped); a missing or unreadable file is
    /// ``SafetensorsError/cannotRead(path:reason:)``.
    public static func mappedBytes(path: String) throws -> Data {
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw SafetensorsError.cannotRead(
                path: path,
                reason: FileManager.default.fileExists(atPath: path)
                    ? "\(error.localizedDescription)" : "no such file")
        }
    }

    /// Parses safetensors bytes.
    public static func decode(_ bytes: Data) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        guard bytes.count >= 8 else {
            throw SafetensorsError.truncated("\(bytes.count) bytes, the 8-byte header length is missing")
        }
        let n = bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= UInt64(headerLimit) else { throw SafetensorsError.headerTooLarge(Int(clamping: n)) }
        let headerLen = Int(n)
        guard bytes.count >= 8 + headerLen else {
            throw SafetensorsError.truncated("header needs \(headerLen) bytes but only \(bytes.count - 8) follow")
        }
        let headerData = bytes.subdata(in: (bytes.startIndex + 8)..<(bytes.startIndex + 8 + headerLen))
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw SafetensorsError.malformedHeader("not valid JSON")
        }
        guard let header = json as? [String: Any] else {
            throw SafetensorsError.malformedHeader("top level is not a JSON object")
        }
        var metadata: [String: String] = [:]
        if let meta = header["__metadata__"] {
            guard let m = meta as? [String: Any] else {
                throw SafetensorsError.malformedHeader("__metadata__ is not an object")
            }
            for (k, v) in m {
                guard let s = v as? String else {
                    throw SafetensorsError.malformedHeader("__metadata__ value for '\(k)' is not a string")
                }
                metadata[k] = s
            }
        }
        let dataStart = 8 + headerLen, dataSize = bytes.count - dataStart
        var tensors: [String: Tensor] = [:]
        var spans: [(Int, Int, String)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any] else {
                throw SafetensorsError.badTensor(tensor: name, reason: "entry is not an object")
            }
            guard let code = entry["dtype"] as? String else {
                throw SafetensorsError.badTensor(tensor: name, reason: "missing dtype")
            }
            guard let dt = dtype(code) else { throw SafetensorsError.unsupportedDType(tensor: name, dtype: code) }
            guard let shapeAny = entry["shape"] as? [Any] else {
                throw SafetensorsError.badTensor(tensor: name, reason: "missing shape")
            }
            var shape: [Int] = []
            var elements = 1, extent = 1  // `extent` counts a 0 as 1, as strides do: it must not overflow either
            for s in shapeAny {
                guard let v = integer(s), v >= 0 else {
                    throw SafetensorsError.badTensor(
                        tensor: name, reason: "shape \(shapeAny) has a non-integer or negative entry")
                }
                let (p, o) = elements.multipliedReportingOverflow(by: v),
                    (e, eo) = extent.multipliedReportingOverflow(by: Swift.max(v, 1))
                guard !o, !eo, p <= dataSize else {
                    throw SafetensorsError.badTensor(tensor: name, reason: "shape \(shapeAny) is larger than the file")
                }
                elements = p
                extent = e
                shape.append(v)
            }
            guard let offs = entry["data_offsets"] as? [Any], offs.count == 2, let begin = integer(offs[0]),
                let end = integer(offs[1])
            else {
                throw SafetensorsError.badTensor(tensor: name, reason: "data_offsets must be two integers")
            }
            guard begin >= 0 && begin <= end else {
                throw SafetensorsError.badTensor(
                    tensor: name, reason: "data_offsets [\(begin), \(end)] are not increasing")
            }
            guard end <= dataSize else {
                throw SafetensorsError.truncated(
                    "tensor '\(name)' ends at byte \(end) of the data section but the data has \(dataSize) bytes")
            }
            guard end - begin == elements * dt.byteSize else {
                throw SafetensorsError.badTensor(
                    tensor: name,
                    reason:
                        "\(end - begin) bytes of data for shape \(shape) of \(code) (needs \(elements * dt.byteSize))")
            }
            spans.append((begin, end, name))
            let t = Tensor(empty: shape, dtype: dt)
            if end > begin {
                bytes.withUnsafeBytes { raw in
                    t.storage.data.copyMemory(from: raw.baseAddress! + dataStart + begin, byteCount: end - begin)
                }
            }
            tensors[name] = t
        }
        spans.sort { $0.0 < $1.0 }
        for i in spans.indices.dropFirst() where spans[i].0 < spans[i - 1].1 {
            throw SafetensorsError.badTensor(tensor: spans[i].2, reason: "data overlaps tensor '\(spans[i - 1].2)'")
        }
        return (tensors, metadata)
    }

    private static func integer(_ v: Any) -> Int? {
        guard let n = v as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d == d.rounded(), Swift.abs(d) < 9e15 else { return nil }
        return n.intValue
    }

    /// Serialises tensors (made contiguous) and metadata; keys are written in sorted order.
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        var blobs: [Tensor] = []
        for name in names {
            let t = tensors[name]!.detached().contiguous()
            let size = t.count * t.dtype.byteSize
            header[name] =
                ["dtype": code(t.dtype), "shape": t.shape, "data_offsets": [offset, offset + size]] as [String: Any]
            offset += size
            blobs.append(t)
        }
        var json = (try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data("{}".utf8)
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = Data(capacity: 8 + json.count + offset)
        var len = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(json)
        for t in blobs {
            out.append(Data(bytes: t.rawPointer, count: t.count * t.dtype.byteSize))
        }
        return out
    }

    /// Writes a file atomically: to a temporary file in the same folder, then renamed over `path`.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        let data = encode(tensors, metadata: metadata)
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try data.write(to: tmp)
            guard rename(tmp.path, path) == 0 else {
                throw SafetensorsError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
            }
        } catch let e as SafetensorsError {
            try? FileManager.default.removeItem(at: tmp)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw SafetensorsError.cannotWrite(path: path, reason: error.localizedDescription)
        }
    }
}
