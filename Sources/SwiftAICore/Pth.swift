import Foundation

/// Why a PyTorch `.pth`/`.pt` file could not be read.
public enum PthError: Error, CustomStringConvertible, Equatable {
    case cannotRead(path: String, reason: String)
    /// Neither a zip archive nor a legacy pickle stream.
    case notPyTorch(file: String, reason: String)
    case truncated(file: String, what: String)
    case badZip(file: String, reason: String)
    /// A zip entry that is compressed; `torch.save` stores entries uncompressed.
    case compressedEntry(file: String, entry: String, method: Int)
    /// An archive record (`data.pkl`, `data/<key>`) or legacy storage that is not in the file.
    case missingRecord(file: String, record: String)
    /// A `torch.jit.save` archive: code, not a state dict.
    case torchScript(file: String)
    case bigEndian(file: String)
    case malformedPickle(file: String, part: String, at: Int, reason: String)
    case unsupportedOpcode(file: String, part: String, opcode: UInt8, name: String?, at: Int)
    /// A global that could run code (`os.system`, `builtins.eval`, …).
    case forbiddenGlobal(file: String, name: String)
    /// A class global: the file pickles a Python object (usually a whole `nn.Module`).
    case pickledObject(file: String, global: String)
    /// A global `torch.load(weights_only=True)` allows but that is not a dense tensor (sparse, quantised…).
    case unsupportedGlobal(file: String, name: String)
    case badStorageRecord(file: String, reason: String)
    case unsupportedDType(file: String, storageType: String)
    case storageTooShort(file: String, storage: String, needed: Int, actual: Int)
    case badTensor(file: String, tensor: String, reason: String)
    /// The unpickled object is not a dict of tensors (or `under:` names no entry).
    case notAStateDict(file: String, reason: String)

    public var description: String {
        let resave = "re-save it in Python with `torch.save(model.state_dict(), path)`"
        switch self {
        case let .cannotRead(path, reason): return "cannot read PyTorch file '\(path)': \(reason)"
        case let .notPyTorch(file, reason): return "'\(file)' is not a PyTorch weights file: \(reason)"
        case let .truncated(file, what): return "'\(file)' is truncated: \(what). Re-download or re-save the file."
        case let .badZip(file, reason): return "'\(file)' is a damaged zip archive: \(reason); \(resave)"
        case let .compressedEntry(file, entry, method):
            return
                """
                '\(file)': entry '\(entry)' is compressed (zip method \(method)); torch.save stores entries \
                uncompressed, so the archive was repacked by another tool: \(resave)
                """
        case let .missingRecord(file, record):
            return "'\(file)' has no record '\(record)': the file is incomplete or not written by torch.save; \(resave)"
        case let .torchScript(file):
            return
                """
                '\(file)' is a TorchScript archive (torch.jit.save), not a state dict: load it with torch.jit.load in \
                Python and save `model.state_dict()` with torch.save
                """
        case let .bigEndian(file):
            return
                """
                '\(file)' was saved on a big-endian machine, which SwiftAI does not read: load it in Python and \
                re-save it on a little-endian machine (or as safetensors)
                """
        case let .malformedPickle(file, part, at, reason):
            return "'\(file)': malformed pickle in \(part) at byte \(at): \(reason); \(resave)"
        case let .unsupportedOpcode(file, part, op, name, at):
            let hex = "0x" + String(op, radix: 16, uppercase: true)
            return
                """
                '\(file)': unsupported pickle opcode \(hex)\(name.map { " (\($0))" } ?? "") at byte \(at) of \(part); \
                like torch.load(weights_only=True), SwiftAI accepts only the protocol-2 opcodes torch.save writes: \
                \(resave) (default pickle_protocol=2)
                """
        case let .forbiddenGlobal(file, name):
            return
                """
                '\(file)' refers to the Python global `\(name)`, which can run code: SwiftAI (like \
                torch.load(weights_only=True)) refuses it and never runs anything from the file. Do not trust this \
                file; if it is yours, \(resave)
                """
        case let .pickledObject(file, global):
            return
                """
                '\(file)' holds a pickled Python object (`\(global)`), not a state dict: save `model.state_dict()` \
                instead, with `torch.save(model.state_dict(), path)`
                """
        case let .unsupportedGlobal(file, name):
            return
                """
                '\(file)' uses `\(name)`, which SwiftAI does not read (only dense tensors in dicts): convert such \
                values in Python (e.g. `.to_dense()`, `.dequantize()`) and save again
                """
        case let .badStorageRecord(file, reason): return "'\(file)': bad storage record: \(reason); \(resave)"
        case let .unsupportedDType(file, type):
            return
                """
                '\(file)' holds a \(type), a dtype SwiftAI does not have (supported: float32, float64, float16, \
                bfloat16, int64, int32, uint8, bool): convert it in Python, e.g. `{k: v.float() for k, v in \
                sd.items()}`, and save again
                """
        case let .storageTooShort(file, storage, needed, actual):
            return
                """
                '\(file)' is truncated: storage '\(storage)' needs \(needed) bytes but its record holds \(actual). \
                Re-download or re-save the file.
                """
        case let .badTensor(file, tensor, reason): return "'\(file)': tensor '\(tensor)': \(reason); \(resave)"
        case let .notAStateDict(file, reason): return "'\(file)' is not a state dict: \(reason)"
        }
    }
}

/// Reads PyTorch weight files written by `torch.save(state_dict, path)`, without running Python.
///
/// Both formats are read: the zip archive of `torch.save` since PyTorch 1.6 (`data.pkl` plus raw little-endian
/// storages under `data/`) and the older stream (`_use_new_zipfile_serialization=False`). The pickle is read by a
/// restricted machine that accepts what `torch.load(weights_only=True)` accepts for plain dense tensors, and only
/// interprets names — nothing in the file is executed, and every size is checked against the file's before use.
///
/// The result is flat: nested dicts, lists and tuples are joined with dots (`{"model": {"fc.weight": t}}` gives
/// `model.fc.weight`, as `state_dict()` names submodules), values that are not tensors (epoch counters, learning
/// rates…) are skipped, and ``read(path:under:)`` with `under: "model"` keeps one sub-dict with its prefix removed.
/// Tensors come back contiguous, on the CPU, without `requiresGrad`, in one of SwiftAI's dtypes (float32, float64,
/// float16, bfloat16, int64, int32, uint8, bool; others are refused).
public enum PyTorchWeights {
    /// Reads the tensors of a `.pth`/`.pt` file; `under` keeps only the entries below one key (e.g. `"model"`).
    public static func read(path: String, under prefix: String? = nil) throws -> [String: Tensor] {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw PthError.cannotRead(
                path: path,
                reason: FileManager.default.fileExists(atPath: path)
                    ? error.localizedDescription : "no such file")
        }
        return try decode(bytes, name: URL(fileURLWithPath: path).lastPathComponent, under: prefix)
    }

    /// Parses the bytes of a `.pth` file; `name` identifies it in errors.
    public static func decode(_ bytes: Data, name: String = "<memory>", under prefix: String? = nil) throws -> [String:
        Tensor]
    {
        let tensors = try bytes.withUnsafeBytes { buf -> [String: Tensor] in
            if buf.count >= 4 && buf[0] == 0x50 && buf[1] == 0x4B { return try zipFormat(buf, file: name) }
            if buf.first == 0x80 { return try legacyFormat(buf, file: name) }
            if buf.count > 262 && Array(buf[257..<262]) == Array("ustar".utf8) {
                throw PthError.notPyTorch(
                    file: name,
                    reason:
                        """
                        it is the tar format of PyTorch before 0.4, which SwiftAI does not read: load it with an old \
                        PyTorch and save it again
                        """
                )
            }
            if buf.count > 8 && buf[8] == UInt8(ascii: "{") {
                throw PthError.notPyTorch(
                    file: name, reason: "it looks like a safetensors file: read it with `Safetensors.read(path:)`")
            }
            let head = buf.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw PthError.notPyTorch(
                file: name,
                reason:
                    """
                    it is neither a zip archive (torch.save since 1.6) nor a pickle stream (older torch.save); it \
                    starts with \(head.isEmpty ? "nothing" : head)
                    """
            )
        }
        guard let prefix else { return tensors }
        var kept: [String: Tensor] = [:]
        for (k, t) in tensors where k.hasPrefix(prefix + ".") { kept[String(k.dropFirst(prefix.count + 1))] = t }
        guard !kept.isEmpty else {
            let tops = Set(tensors.keys.map { String($0.prefix { $0 != "." }) }).sorted()
            throw PthError.notAStateDict(
                file: name,
                reason:
                    """
                    no tensors under '\(prefix)'; the top-level keys holding tensors are \
                    \(tops.prefix(20).map { "'\($0)'" }.joined(separator: ", "))
                    """
            )
        }
        return kept
    }

    // MARK: Formats

    private static func zipFormat(_ buf: UnsafeRawBufferPointer, file: String) throws -> [String: Tensor] {
        let zip = try StoredZip(buf, file: file)
        guard
            let pkl = zip.entries.first(where: {
                $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/").count == 2
            })
        else {
            throw PthError.missingRecord(file: file, record: "<archive>/data.pkl")
        }
        let root = String(pkl.name.dropLast("data.pkl".count))
        if zip.entries.contains(where: { $0.name == root + "constants.pkl" })
            || zip.entries.contains(where: { $0.name.hasPrefix(root + "code/") })
        {
            throw PthError.torchScript(file: file)
        }
        if let order = try zip.data(root + "byteorder") {
            switch String(decoding: UnsafeRawBufferPointer(rebasing: buf[order]), as: UTF8.self) {
            case "little": break
            case "big": throw PthError.bigEndian(file: file)
            case let other: throw PthError.badZip(file: file, reason: "byteorder record says '\(other.prefix(20))'")
            }
        }
        func record(_ key: String) throws -> Range<Int> {
            guard let r = try zip.data(root + "data/" + key) else {
                throw PthError.missingRecord(file: file, record: root + "data/" + key)
            }
            return r
        }
        let pickle = try zip.data(pkl.name)!
        let flat = try Unpickler(UnsafeRawBufferPointer(rebasing: buf[pickle]), from: 0, file: file, part: "data.pkl") {
            pid in
            let s = try storage(pid, file: file)
            let have = try record(s.key).count, need = s.numel * s.dtype.byteSize
            guard have >= need else {
                throw PthError.storageTooShort(file: file, storage: s.key, needed: need, actual: have)
            }
            return .storage(s)
        }.load { try flatten($0, file: file, budget: pickle.count) }
        return try materialize(flat, buf, file: file) { try record($0.key) }
    }

    /// PyTorch's magic number 0x1950a86a20f9469cfc6c, as the little-endian bytes of its `LONG1`.
    private static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    /// Pickles of magic number, protocol version, system info, the object, storage keys; then each storage as
    /// int64 element count and raw bytes.
    private static func legacyFormat(_ buf: UnsafeRawBufferPointer, file: String) throws -> [String: Tensor] {
        var position = 0
        func small<R>(_ part: String, _ use: (PickleValue) throws -> R) throws -> R {
            let u = Unpickler(buf, from: position, file: file, part: part) { _ in
                throw PthError.badStorageRecord(file: file, reason: "\(part) refers to a storage")
            }
            defer { position = u.position }
            return try u.load(use)
        }
        guard
            try small(
                "magic number",
                {
                    if case .bigInt(legacyMagic) = $0 { return true }; return false
                })
        else {
            throw PthError.notPyTorch(
                file: file, reason: "it is a pickle without PyTorch's magic number (plain pickle files are not read)")
        }
        try small("protocol version") {
            guard case .int(1001) = $0 else {
                throw PthError.notPyTorch(file: file, reason: "unknown legacy protocol version \($0)")
            }
        }
        try small("system info") {
            guard case let .dict(d) = $0 else { return }
            for case (.string("little_endian"), .bool(false)) in d.entries { throw PthError.bigEndian(file: file) }
        }
        var storages: [String: PickledStorage] = [:]
        let main = Unpickler(buf, from: position, file: file, part: "the object pickle") { pid in
            let s = try storage(pid, file: file)
            if let seen = storages[s.key], seen.dtype != s.dtype || seen.numel != s.numel {
                throw PthError.badStorageRecord(
                    file: file, reason: "storage '\(s.key)' is declared twice with different types or sizes")
            }
            storages[s.key] = s
            return .storage(s)
        }
        let flat = try main.load { try flatten($0, file: file, budget: buf.count) }
        position = main.position
        let keys: [String] = try small("storage keys") {
            guard case let .list(l) = $0 else {
                throw PthError.badStorageRecord(file: file, reason: "storage keys are a \($0.kind), not a list")
            }
            return try l.items.map {
                guard case let .string(k) = $0 else {
                    throw PthError.badStorageRecord(file: file, reason: "a storage key is a \($0.kind)")
                }
                return k
            }
        }
        var records: [String: Range<Int>] = [:]
        for key in keys {
            guard let s = storages[key] else {
                throw PthError.badStorageRecord(
                    file: file, reason: "storage '\(key)' is listed but never used, so its size is unknown")
            }
            guard buf.count - position >= 8 else {
                throw PthError.truncated(file: file, what: "storage '\(key)' is missing")
            }
            let numel = (0..<8).reduce(UInt64(0)) { $0 | UInt64(buf[position + $1]) << (8 * UInt64($1)) }
            guard numel == UInt64(s.numel) else {
                throw PthError.badStorageRecord(
                    file: file, reason: "storage '\(key)' holds \(numel) elements but the pickle declares \(s.numel)")
            }
            let size = s.numel * s.dtype.byteSize
            guard buf.count - position - 8 >= size else {
                throw PthError.storageTooShort(file: file, storage: key, needed: size, actual: buf.count - position - 8)
            }
            records[key] = (position + 8)..<(position + 8 + size)
            position += 8 + size
        }
        return try materialize(flat, buf, file: file) { s in
            guard let r = records[s.key] else { throw PthError.missingRecord(file: file, record: "storage '\(s.key)'") }
            return r
        }
    }

    // MARK: Storages and tensors

    static let storageDTypes: [String: DType] = [
        "torch.FloatStorage": .float32, "torch.DoubleStorage": .float64, "torch.HalfStorage": .float16,
        "torch.BFloat16Storage": .bfloat16, "torch.LongStorage": .int64, "torch.IntStorage": .int32,
        "torch.ByteStorage": .uint8, "torch.BoolStorage": .bool, "torch.UntypedStorage": .uint8
    ]

    /// Interprets a persistent id `('storage', type, key, location, numel[, view_metadata])`.
    private static func storage(_ pid: PickleValue, file: String) throws -> PickledStorage {
        guard case let .tuple(t) = pid, t.items.count == 5 || t.items.count == 6, case .string("storage") = t.items[0]
        else {
            throw PthError.badStorageRecord(
                file: file, reason: "persistent id is a \(pid.kind), not ('storage', type, key, location, numel)")
        }
        guard case let .global(type) = t.items[1] else {
            throw PthError.badStorageRecord(file: file, reason: "storage type is a \(t.items[1].kind)")
        }
        guard let dtype = storageDTypes[type] else { throw PthError.unsupportedDType(file: file, storageType: type) }
        guard case let .string(key) = t.items[2], case let .int(numel) = t.items[4], numel >= 0, numel < 1 << 56 else {
            throw PthError.badStorageRecord(
                file: file, reason: "storage key must be a string and its size an integer from 0 to 2^56")
        }
        var window: (Int, Int)?
        if t.items.count == 6, case let .tuple(v) = t.items[5] {
            guard v.items.count == 3, case let .int(offset) = v.items[1], case let .int(count) = v.items[2],
                offset >= 0, count >= 0, count <= numel - offset
            else {
                throw PthError.badStorageRecord(
                    file: file, reason: "storage view of '\(key)' lies outside its \(numel) elements")
            }
            window = (offset, count)
        }
        return PickledStorage(dtype: dtype, key: key, numel: numel, window: window)
    }

    /// Copies each tensor out of its storage record, contiguous; identical views are copied once.
    ///
    /// Tensors may need at most 4× the file's size (plus 16 MiB) in all, so stride-0 views or storages reused
    /// by many views cannot make a small file allocate without bound.
    private static func materialize(
        _ flat: [(String, PickledTensor)], _ buf: UnsafeRawBufferPointer, file: String,
        record: (PickledStorage) throws -> Range<Int>
    ) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        var made: [String: Tensor] = [:]
        var budget = 4 * buf.count + (16 << 20)
        for (name, p) in flat {
            func bad(_ why: String) -> PthError { .badTensor(file: file, tensor: name, reason: why) }
            let s = p.storage, es = s.dtype.byteSize
            let identity =
                "\(s.key)|\(s.window.map { "\($0.offset),\($0.count)" } ?? "")|\(p.offset)|\(p.shape)|\(p.strides)"
            if let t = made[identity] { out[name] = t; continue }
            guard p.shape.count == p.strides.count, p.shape.count <= 64 else {
                throw bad("size \(p.shape) and stride \(p.strides) do not match")
            }
            guard p.offset >= 0, p.shape.allSatisfy({ $0 >= 0 }), p.strides.allSatisfy({ $0 >= 0 }) else {
                throw bad("negative offset, size or stride (offset \(p.offset), size \(p.shape), stride \(p.strides))")
            }
            let available = s.window?.count ?? s.numel
            var count = 1, extent = 1, last = p.offset  // `extent` counts a 0 as 1, as contiguous strides do
            for (n, st) in zip(p.shape, p.strides) {
                let (c, o1) = count.multipliedReportingOverflow(by: n)
                let (reach, o2) = st.multipliedReportingOverflow(by: Swift.max(n - 1, 0))
                let (l, o3) = last.addingReportingOverflow(reach)
                let (e, o4) = extent.multipliedReportingOverflow(by: Swift.max(n, 1))
                guard !o1, !o2, !o3, !o4, c <= budget else {
                    throw bad("size \(p.shape) is larger than the file allows")
                }
                count = c
                extent = e
                last = l
            }
            guard count == 0 || last < available else {
                throw bad(
                    """
                    size \(p.shape), stride \(p.strides) and offset \(p.offset) reach element \(last) of a storage of \
                    \(available)
                    """
                )
            }
            budget -= count * es
            guard budget >= 0 else {
                throw bad(
                    "the tensors would need more than 4× the file's size: the file reuses its storages implausibly")
            }
            let range = try record(s)
            let base = range.lowerBound + ((s.window?.offset ?? 0) + p.offset) * es
            let t: Tensor
            if count == 0 {
                t = Tensor(empty: p.shape, dtype: s.dtype)
            } else {
                let spanBytes = (last - p.offset + 1) * es
                guard base + spanBytes <= range.upperBound else {
                    throw PthError.storageTooShort(
                        file: file, storage: s.key, needed: base + spanBytes - range.lowerBound, actual: range.count)
                }
                let span = Storage(byteCount: spanBytes)
                span.data.copyMemory(from: buf.baseAddress! + base, byteCount: span.byteCount)
                let view = Tensor(storage: span, shape: p.shape, strides: p.strides, offset: 0, dtype: s.dtype)
                t =
                    view.isContiguous
                    ? Tensor(
                        storage: span, shape: p.shape, strides: Tensor.contiguousStrides(p.shape), offset: 0,
                        dtype: s.dtype)
                    : view.contiguous()
            }
            made[identity] = t
            out[name] = t
        }
        return out
    }

    /// Dotted paths to every tensor under `root`; `budget` bounds the nodes visited (shared sub-dicts repeat).
    private static func flatten(_ root: PickleValue, file: String, budget: Int) throws -> [(String, PickledTensor)] {
        switch root {
        case .dict, .list, .tuple: break
        case .tensor:
            throw PthError.notAStateDict(
                file: file, reason: "it holds a single tensor; save a dict such as `{'weight': t}`")
        default: throw PthError.notAStateDict(file: file, reason: "it holds a \(root.kind), not a dict of tensors")
        }
        var out: [(String, PickledTensor)] = []
        var seen: Set<String> = []
        var visits = 0
        func walk(_ v: PickleValue, _ path: String, _ depth: Int) throws {
            visits += 1
            guard visits <= budget + 16 else {
                throw PthError.notAStateDict(
                    file: file, reason: "its dicts refer to each other more often than the file's size allows")
            }
            guard depth <= 64 else {
                throw PthError.notAStateDict(
                    file: file, reason: "dicts are nested more than 64 deep at '\(path.prefix(200))'")
            }
            func child(_ key: String, _ value: PickleValue) throws {
                try walk(value, path.isEmpty ? key : path + "." + key, depth + 1)
            }
            switch v {
            case let .tensor(t):
                guard seen.insert(path).inserted else {
                    throw PthError.notAStateDict(file: file, reason: "key '\(path)' appears twice")
                }
                out.append((path, t))
            case let .dict(d):
                for (k, value) in d.entries {
                    switch k {
                    case let .string(s): try child(s, value)
                    case let .int(i): try child(String(i), value)
                    case let .bool(b): try child(b ? "True" : "False", value)
                    default:
                        switch value {
                        case .tensor, .dict, .list, .tuple:
                            throw PthError.notAStateDict(
                                file: file,
                                reason: "a key under '\(path)' is a \(k.kind); keys must be strings or integers")
                        default: break
                        }
                    }
                }
            case let .list(l): for (i, value) in l.items.enumerated() { try child(String(i), value) }
            case let .tuple(t): for (i, value) in t.items.enumerated() { try child(String(i), value) }
            default: break
            }
        }
        try walk(root, "", 0)
        return out
    }
}
