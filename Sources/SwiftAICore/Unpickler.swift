/// A value built by ``Unpickler``: plain data and interpreted torch names, never Python code.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// A `LONG1` integer wider than 64 bits: little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    /// An allowlisted name such as `torch.float32` or `collections.OrderedDict`, kept as a name.
    case global(String)
    case storage(PickledStorage)
    case tensor(PickledTensor)

    /// What the value is, for error messages.
    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case let .global(name): return "`\(name)`"
        case .storage: return "storage"
        case .tensor: return "tensor"
        }
    }
}

/// An immutable tuple; `depth` bounds recursion when it is freed.
struct PickleTuple {
    let items: [PickleValue]
    let depth: Int
}

/// A list, shared by reference as in Python (the memo may hold it while `APPEND` fills it).
final class PickleList {
    var items: [PickleValue] = []
}

/// A dict (or `OrderedDict`) in insertion order, shared by reference.
final class PickleDict {
    var entries: [(key: PickleValue, value: PickleValue)] = []
}

/// A storage named by a persistent id: `numel` elements of `dtype` in record `key`, or a window of it.
struct PickledStorage {
    let dtype: DType
    let key: String
    let numel: Int
    /// Legacy storage views: elements `offset ..< offset + count` of the record.
    let window: (offset: Int, count: Int)?
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`, not yet checked against the storage.
struct PickledTensor {
    let storage: PickledStorage
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// The pickle machine of `torch.load(weights_only=True)`, restricted further to what state dicts need.
///
/// Opcodes are those torch's weights-only unpickler accepts (protocol 2 as `torch.save` writes it). Globals are
/// names from an allowlist that this type interprets itself — `OrderedDict`, the tensor and parameter rebuild
/// functions, storage classes, dtypes — so nothing from the file is ever imported or run. Every read is checked
/// against the buffer, so sizes in the file cannot cause large allocations.
final class Unpickler {
    private let buf: UnsafeRawBufferPointer
    private let file: String, part: String
    private let persistentLoad: (PickleValue) throws -> PickleValue
    /// Where the next opcode starts; after ``load(_:)``, the byte after `STOP`.
    private(set) var position: Int
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []
    static let maxTupleDepth = 100

    /// Reads the pickle starting at `start` of `buf`; `file` and `part` name it in errors.
    init(
        _ buf: UnsafeRawBufferPointer, from start: Int, file: String, part: String,
        persistentLoad: @escaping (PickleValue) throws -> PickleValue
    ) {
        self.buf = buf
        self.position = start
        self.file = file
        self.part = part
        self.persistentLoad = persistentLoad
    }

    /// Runs the pickle to `STOP` and passes its result to `use`.
    ///
    /// Lists and dicts are emptied afterwards, so freeing a deeply nested or cyclic structure from a hostile
    /// file neither recurses deeply nor leaks.
    func load<R>(_ use: (PickleValue) throws -> R) throws -> R {
        defer {
            stack = []
            memo = [:]
            for l in lists { l.items = [] }
            for d in dicts { d.entries = [] }
        }
        return try use(try run())
    }

    // MARK: Reading bytes

    private func malformed(_ why: String, at: Int? = nil) -> PthError {
        .malformedPickle(file: file, part: part, at: at ?? position, reason: why)
    }

    private func take(_ n: Int) throws -> Range<Int> {
        guard n >= 0, n <= buf.count - position else {
            throw PthError.truncated(
                file: file, what: "\(part) needs \(n) more bytes at byte \(position) but the data ends at \(buf.count)")
        }
        defer { position += n }
        return position..<(position + n)
    }

    private func uint(_ n: Int) throws -> UInt64 {
        try take(n).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(buf[$1]) }
    }

    private func bytes(_ n: Int) throws -> [UInt8] { Array(buf[try take(n)]) }

    private func line() throws -> String {
        let start = position
        guard let end = (start..<Swift.min(buf.count, start + 1024)).first(where: { buf[$0] == 0x0A }) else {
            throw malformed("GLOBAL name is not terminated by a newline")
        }
        position = end + 1
        return String(decoding: UnsafeRawBufferPointer(rebasing: buf[start..<end]), as: UTF8.self)
    }

    // MARK: The stack

    private func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw malformed("stack underflow") }
        return stack.removeLast()
    }

    private func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw malformed("no MARK to pop to") }
        defer { stack.removeSubrange(m...) }
        return Array(stack[m...])
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw malformed("stack underflow") }
        return stack[stack.count - 1]
    }

    private func tuple(_ items: [PickleValue]) throws -> PickleValue {
        var depth = 1
        for case let .tuple(t) in items { depth = Swift.max(depth, t.depth + 1) }
        guard depth <= Unpickler.maxTupleDepth else {
            throw malformed("tuples nested more than \(Unpickler.maxTupleDepth) deep")
        }
        return .tuple(PickleTuple(items: items, depth: depth))
    }

    private func newList() -> PickleValue {
        let l = PickleList()
        lists.append(l)
        return .list(l)
    }

    private func newDict() -> PickleValue {
        let d = PickleDict()
        dicts.append(d)
        return .dict(d)
    }

    // MARK: The machine

    private func run() throws -> PickleValue {
        while true {
            let at = position
            let op = buf[try take(1).lowerBound]
            switch op {
            case 0x80:  // PROTO
                let v = try uint(1)
                guard v <= 5 else { throw malformed("pickle protocol \(v) does not exist", at: at) }
            case 0x2E:  // STOP
                return try pop()
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                stack.append(try Unpickler.global(module + "." + name, file: file))
            case 0x52:  // REDUCE
                let args = try pop()
                guard case let .tuple(t) = args else {
                    throw malformed("REDUCE arguments are a \(args.kind), not a tuple", at: at)
                }
                let f = try pop()
                stack.append(try call(f, t.items, at: at))
            case 0x81:  // NEWOBJ
                let args = try pop(), cls = try pop()
                guard case let .tuple(t) = args else {
                    throw malformed("NEWOBJ arguments are a \(args.kind), not a tuple", at: at)
                }
                stack.append(try construct(cls, t.items, at: at))
            case 0x62:  // BUILD: attributes of an OrderedDict (its `_metadata`) or a tensor, which carry no weights
                let state = try pop(), inst = try top()
                switch inst {
                case .dict, .tensor: break
                default:
                    throw malformed(
                        "BUILD sets \(state.kind) state on a \(inst.kind); only dicts and tensors allow it", at: at)
                }
            case 0x51:  // BINPERSID
                stack.append(try persistentLoad(try pop()))
            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x61:  // APPEND
                let item = try pop()
                guard case let .list(l) = try top() else { throw malformed("APPEND to a non-list", at: at) }
                l.items.append(item)
            case 0x65:  // APPENDS
                let items = try popMark()
                guard case let .list(l) = try top() else { throw malformed("APPENDS to a non-list", at: at) }
                l.items += items
            case 0x73:  // SETITEM
                let v = try pop(), k = try pop()
                guard case let .dict(d) = try top() else { throw malformed("SETITEM on a non-dict", at: at) }
                d.entries.append((k, v))
            case 0x75:  // SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw malformed("SETITEMS with an odd number of items", at: at) }
                guard case let .dict(d) = try top() else { throw malformed("SETITEMS on a non-dict", at: at) }
                for i in stride(from: 0, to: items.count, by: 2) { d.entries.append((items[i], items[i + 1])) }
            case 0x74:  // TUPLE
                stack.append(try tuple(try popMark()))
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                var items: [PickleValue] = []
                for _ in 0..<Int(op - 0x84) { items.insert(try pop(), at: 0) }
                stack.append(try tuple(items))
            case 0x4E: stack.append(.none)  // NONE
            case 0x88: stack.append(.bool(true))  // NEWTRUE
            case 0x89: stack.append(.bool(false))  // NEWFALSE
            case 0x29: stack.append(try tuple([]))  // EMPTY_TUPLE
            case 0x5D, 0x8F: stack.append(newList())  // EMPTY_LIST, EMPTY_SET (a set's items are never used)
            case 0x7D: stack.append(newDict())  // EMPTY_DICT
            case 0x4A: stack.append(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))  // BININT
            case 0x4B: stack.append(.int(Int(try uint(1))))  // BININT1
            case 0x4D: stack.append(.int(Int(try uint(2))))  // BININT2
            case 0x8A:  // LONG1
                let raw = try bytes(Int(try uint(1)))
                if raw.count > 8 {
                    stack.append(.bigInt(raw))
                } else {
                    let v = raw.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    let shift = UInt64(64 - 8 * raw.count)
                    stack.append(.int(raw.isEmpty ? 0 : Int(Int64(bitPattern: v << shift) >> Int64(shift))))
                }
            case 0x47:  // BINFLOAT (big-endian)
                let r = try take(8)
                stack.append(.float(Double(bitPattern: r.reduce(UInt64(0)) { $0 << 8 | UInt64(buf[$1]) })))
            case 0x58:  // BINUNICODE
                let r = try take(Int(try uint(4)))
                stack.append(.string(String(decoding: UnsafeRawBufferPointer(rebasing: buf[r]), as: UTF8.self)))
            case 0x55:  // SHORT_BINSTRING (Python 2 str)
                let r = try take(Int(try uint(1)))
                stack.append(.string(String(decoding: UnsafeRawBufferPointer(rebasing: buf[r]), as: UTF8.self)))
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let i = Int(try uint(op == 0x68 ? 1 : 4))
                guard let v = memo[i] else { throw malformed("memo entry \(i) is read before it is written", at: at) }
                stack.append(v)
            case 0x71, 0x72:  // BINPUT, LONG_BINPUT
                memo[Int(try uint(op == 0x71 ? 1 : 4))] = try top()
            default:
                throw PthError.unsupportedOpcode(
                    file: file, part: part, opcode: op, name: Unpickler.opcodeNames[op], at: at)
            }
        }
    }

    // MARK: Globals

    /// torch dtypes, kept as names (checkpoints may store a dtype as a value).
    static let dtypeNames: Set<String> = [
        "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
        "complex64", "complex128", "float", "double", "half", "long", "int", "short", "cfloat", "cdouble"
    ]

    /// Globals whose calls this type interprets.
    static let interpreted: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2", "torch.Size", "torch.device", "torch.Tensor",
        "torch.nn.parameter.Parameter", "_codecs.encode"
    ]

    /// Allowed by `torch.load(weights_only=True)` but not read here (sparse, quantised, nested, meta tensors…).
    static let torchOnly: Set<String> = [
        "collections.Counter", "torch.serialization._get_layout", "builtins.bytearray", "builtins.set",
        "builtins.complex",
        "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_wrapper_subclass", "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor"
    ]

    /// Modules whose globals can run code; their names are refused as dangerous even when capitalised.
    static let dangerousModules: Set<String> = [
        "os", "posix", "nt", "sys", "subprocess", "builtins", "__builtin__", "shutil", "socket", "importlib",
        "runpy", "pickle", "marshal", "ctypes", "types", "code", "pty", "webbrowser", "operator", "functools"
    ]

    /// The value `GLOBAL module name` pushes, or the error refusing it.
    static func global(_ name: String, file: String) throws -> PickleValue {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        let isStorage =
            parts.count == 2 && parts[0] == "torch" && parts[1].hasSuffix("Storage")
            && parts[1].allSatisfy { $0.isLetter || $0.isNumber }
        if interpreted.contains(name) || isStorage
            || (parts.count == 2 && parts[0] == "torch" && dtypeNames.contains(String(parts[1])))
        {
            return .global(name)
        }
        if torchOnly.contains(name) { throw PthError.unsupportedGlobal(file: file, name: name) }
        if !dangerousModules.contains(String(parts[0])), parts.count > 1, parts.last!.first?.isUppercase == true {
            throw PthError.pickledObject(file: file, global: name)
        }
        throw PthError.forbiddenGlobal(file: file, name: name)
    }

    /// `REDUCE`: the allowlisted functions, interpreted.
    private func call(_ f: PickleValue, _ args: [PickleValue], at: Int) throws -> PickleValue {
        guard case let .global(name) = f else { throw malformed("REDUCE calls a \(f.kind)", at: at) }
        func arity(_ n: ClosedRange<Int>) throws {
            guard n.contains(args.count) else { throw malformed("\(name) called with \(args.count) arguments", at: at) }
        }
        switch name {
        case "collections.OrderedDict":
            try arity(0...0)
            return newDict()
        case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
            try arity(4...7)
            guard case let .storage(s) = args[0] else {
                throw malformed("\(name) expects a storage, got \(args[0].kind)", at: at)
            }
            guard case let .int(offset) = args[1] else {
                throw malformed("\(name) expects an integer offset, got \(args[1].kind)", at: at)
            }
            return .tensor(
                PickledTensor(
                    storage: s, offset: offset, shape: try ints(args[2], "size", at: at),
                    strides: try ints(args[3], "stride", at: at)))
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            try arity(3...4)
            guard case .tensor = args[0] else {
                throw malformed("\(name) expects a tensor, got \(args[0].kind)", at: at)
            }
            return args[0]
        case "torch._tensor._rebuild_from_type_v2":
            try arity(4...4)
            guard case let .global(type) = args[1], type == "torch.Tensor" || type == "torch.nn.parameter.Parameter",
                case let .tuple(inner) = args[2]
            else {
                throw malformed(
                    "\(name) rebuilds a \(args[1].kind) from \(args[2].kind); only plain tensors are read", at: at)
            }
            return try call(args[0], inner.items, at: at)
        case "torch.Size":
            try arity(1...1)
            return args[0]
        case "torch.device":
            try arity(1...2)
            return .string(
                args.map { (v: PickleValue) -> String in
                    switch v {
                    case let .string(s): return s
                    case let .int(i): return String(i)
                    default: return v.kind
                    }
                }.joined(separator: ":"))
        case "_codecs.encode":  // how protocol 2 spells `bytes`: encode(latin-1 text, "latin1")
            try arity(2...2)
            guard case let .string(s) = args[0] else { throw malformed("_codecs.encode of a \(args[0].kind)", at: at) }
            return .bytes(s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) })
        default:
            throw malformed("\(name) is not callable", at: at)
        }
    }

    /// `NEWOBJ`: `Parameter(tensor, …)` and empty `OrderedDict`s.
    private func construct(_ cls: PickleValue, _ args: [PickleValue], at: Int) throws -> PickleValue {
        switch cls {
        case .global("torch.nn.parameter.Parameter"):
            guard case .tensor = args.first else {
                throw malformed("Parameter built from \(args.first?.kind ?? "nothing")", at: at)
            }
            return args[0]
        case .global("collections.OrderedDict") where args.isEmpty:
            return newDict()
        default:
            throw malformed("NEWOBJ of \(cls.kind) with \(args.count) arguments is not allowed", at: at)
        }
    }

    private func ints(_ v: PickleValue, _ what: String, at: Int) throws -> [Int] {
        guard case let .tuple(t) = v else { throw malformed("tensor \(what) is a \(v.kind), not a tuple", at: at) }
        return try t.items.map {
            guard case let .int(i) = $0 else { throw malformed("tensor \(what) holds a \($0.kind)", at: at) }
            return i
        }
    }

    /// Names of opcodes outside the accepted set, for messages.
    static let opcodeNames: [UInt8: String] = [
        0x93: "STACK_GLOBAL, protocol 4", 0x95: "FRAME, protocol 4", 0x94: "MEMOIZE, protocol 4",
        0x8C: "SHORT_BINUNICODE, protocol 4", 0x8D: "BINUNICODE8, protocol 4", 0x8E: "BINBYTES8, protocol 4",
        0x90: "ADDITEMS, protocol 4", 0x91: "FROZENSET, protocol 4", 0x92: "NEWOBJ_EX, protocol 4",
        0x96: "BYTEARRAY8, protocol 5", 0x97: "NEXT_BUFFER, protocol 5", 0x98: "READONLY_BUFFER, protocol 5",
        0x42: "BINBYTES, protocol 3", 0x43: "SHORT_BINBYTES, protocol 3", 0x8B: "LONG4",
        0x54: "BINSTRING", 0x53: "STRING", 0x56: "UNICODE", 0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT",
        0x50: "PERSID", 0x67: "GET", 0x70: "PUT", 0x6C: "LIST", 0x64: "DICT", 0x6F: "OBJ", 0x69: "INST",
        0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4"
    ]
}
