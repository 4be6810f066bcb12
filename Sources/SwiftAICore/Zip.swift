/// Reads the central directory of an uncompressed ("stored") zip archive held in memory, as `torch.save` writes.
///
/// Only what PyTorch archives use is supported: one disk, zip64 sizes and offsets, and data of stored entries
/// (compressed ones are listed but their data is refused).
/// Every offset and size is checked against the buffer before use.
struct StoredZip {
    /// An entry's name, compression method and the byte range of its (possibly compressed) data in the buffer.
    struct Entry {
        let name: String
        let method: Int
        let dataRange: Range<Int>
    }

    /// Entries in central-directory order.
    let entries: [Entry]
    private let index: [String: Int]
    private let file: String

    /// Where the data of entry `name` lies; `nil` when there is no such entry, an error when it is compressed.
    func data(_ name: String) throws -> Range<Int>? {
        guard let e = index[name].map({ entries[$0] }) else { return nil }
        guard e.method == 0 else { throw PthError.compressedEntry(file: file, entry: name, method: e.method) }
        return e.dataRange
    }

    /// Parses the central directory of `buf`; `file` names the archive in errors.
    init(_ buf: UnsafeRawBufferPointer, file: String) throws {
        func le(_ at: Int, _ width: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<width { v |= UInt64(buf[at + i]) << (8 * UInt64(i)) }
            return v
        }
        func bad(_ why: String) -> PthError { .badZip(file: file, reason: why) }
        func offset(_ v: UInt64, _ what: String) throws -> Int {
            guard v <= UInt64(buf.count) else {
                throw PthError.truncated(
                    file: file, what: "\(what) at byte \(v) is past the end of the \(buf.count)-byte file")
            }
            return Int(v)
        }
        // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the very end.
        let n = buf.count
        var eocd = -1
        if n >= 22 {
            for p in stride(from: n - 22, through: Swift.max(0, n - 22 - 65_535), by: -1)
            where le(p, 4) == 0x0605_4b50 && Int(le(p + 20, 2)) == n - p - 22 {
                eocd = p
                break
            }
        }
        guard eocd >= 0 else {
            throw PthError.truncated(
                file: file,
                what: "the zip end-of-central-directory record is missing (the download or save was cut short)")
        }
        var count = le(eocd + 10, 2), cdSize = le(eocd + 12, 4), cdOffset = le(eocd + 16, 4)
        if eocd >= 20 && le(eocd - 20, 4) == 0x0706_4b50 {
            let z = try offset(le(eocd - 12, 8), "zip64 end-of-central-directory record")
            guard z + 56 <= n, le(z, 4) == 0x0606_4b50 else {
                throw bad("zip64 end-of-central-directory record is missing")
            }
            count = le(z + 32, 8)
            cdSize = le(z + 40, 8)
            cdOffset = le(z + 48, 8)
        }
        guard le(eocd + 4, 2) == 0 && le(eocd + 6, 2) == 0 else { throw bad("multi-disk archives are not supported") }
        let cdStart = try offset(cdOffset, "central directory")
        guard cdSize <= UInt64(n - cdStart) else {
            throw PthError.truncated(
                file: file, what: "central directory of \(cdSize) bytes at byte \(cdStart) runs past the end")
        }
        guard count <= cdSize / 46 else {
            throw bad("\(count) entries cannot fit in a \(cdSize)-byte central directory")
        }
        let cdEnd = cdStart + Int(cdSize)
        var entries: [Entry] = []
        var index: [String: Int] = [:]
        var p = cdStart
        for _ in 0..<Int(count) {
            guard p + 46 <= cdEnd, le(p, 4) == 0x0201_4b50 else {
                throw bad("central directory entry \(entries.count) is malformed")
            }
            let flags = le(p + 8, 2), method = le(p + 10, 2)
            var compressed = le(p + 20, 4), size = le(p + 24, 4), local = le(p + 42, 4)
            let nameLen = Int(le(p + 28, 2)), extraLen = Int(le(p + 30, 2)), commentLen = Int(le(p + 32, 2))
            guard p + 46 + nameLen + extraLen + commentLen <= cdEnd else {
                throw bad("central directory entry \(entries.count) overruns the directory")
            }
            let name = String(
                decoding: UnsafeRawBufferPointer(rebasing: buf[(p + 46)..<(p + 46 + nameLen)]), as: UTF8.self)
            // Zip64 extended information (tag 1): 8-byte values for whichever 32-bit fields are saturated, in order.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let tag = le(e, 2), len = Int(le(e + 2, 2))
                guard e + 4 + len <= extraEnd else { throw bad("extra field of '\(name)' overruns its entry") }
                if tag == 1 {
                    var f = e + 4
                    func widen(_ v: inout UInt64) throws {
                        guard v == 0xFFFF_FFFF else { return }
                        guard f + 8 <= e + 4 + len else { throw bad("zip64 field of '\(name)' is too short") }
                        v = le(f, 8)
                        f += 8
                    }
                    try widen(&size)
                    try widen(&compressed)
                    try widen(&local)
                }
                e += 4 + len
            }
            guard flags & 1 == 0 else { throw bad("entry '\(name)' is encrypted") }
            guard method != 0 || compressed == size else {
                throw bad("stored entry '\(name)' has different compressed (\(compressed)) and real (\(size)) sizes")
            }
            let lh = try offset(local, "local header of '\(name)'")
            guard lh + 30 <= n, le(lh, 4) == 0x0403_4b50 else {
                throw PthError.truncated(file: file, what: "local header of '\(name)' at byte \(lh) is missing")
            }
            let start = lh + 30 + Int(le(lh + 26, 2)) + Int(le(lh + 28, 2))
            guard start <= n, compressed <= UInt64(n - start) else {
                throw PthError.truncated(
                    file: file, what: "entry '\(name)' needs \(compressed) bytes at byte \(start) of a \(n)-byte file")
            }
            if index[name] == nil { index[name] = entries.count }
            entries.append(Entry(name: name, method: Int(method), dataRange: start..<(start + Int(compressed))))
            p += 46 + nameLen + extraLen + commentLen
        }
        self.entries = entries
        self.index = index
        self.file = file
    }
}
