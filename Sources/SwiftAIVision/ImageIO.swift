import CPNG
import CTurboJPEG
import Foundation
import SwiftAICore

/// Decoding and encoding JPEG (TurboJPEG) and PNG (libpng) files, matching PIL's `Image.open(p).convert("RGB")`
/// (or `"L"`) to within JPEG decoder rounding, except that JPEG EXIF orientation is applied (as
/// `ImageOps.exif_transpose`) and 16-bit gray PNGs keep their high byte where PIL clips.
extension Image {
    /// The default pixel limit of ``read(_:mode:maxPixels:neededSize:)``: 178,956,970 (PIL's decompression-bomb
    /// error threshold, twice its warning threshold `Image.MAX_IMAGE_PIXELS`), about 537 MB of decoded RGB.
    public static var defaultMaxPixels: Int { 178_956_970 }

    /// Files larger than this are refused before reading (no JPEG or PNG within the pixel limit needs more).
    static let maxFileBytes = 1 << 30

    /// Reads and decodes a JPEG or PNG file as 8-bit RGB (`.rgb`) or gray (`.gray`).
    ///
    /// - Parameters:
    ///   - maxPixels: images whose header claims more pixels are refused before any pixel buffer is allocated.
    ///   - neededSize: given the full (EXIF-oriented) size, the smallest size still needed; JPEGs are then decoded
    ///     with the smallest DCT scaling (1/8, 1/4 or 1/2) that keeps both sides at least that large. PNGs ignore it.
    /// - Throws: ``ImageError`` naming the file and what was wrong with it.
    public static func read(
        _ path: String, mode: ImageMode = .rgb, maxPixels: Int = Image.defaultMaxPixels,
        neededSize: ((_ width: Int, _ height: Int) -> (width: Int, height: Int))? = nil
    ) throws -> Image {
        let bytes = try readFileBytes(path, upTo: maxFileBytes)
        return try decode(bytes, path: path, mode: mode, maxPixels: maxPixels, neededSize: neededSize)
    }

    /// Decodes the bytes of a JPEG or PNG file; `path` names it in errors. Options as
    /// ``read(_:mode:maxPixels:neededSize:)``.
    public static func decode(
        _ bytes: [UInt8], path: String, mode: ImageMode = .rgb, maxPixels: Int = Image.defaultMaxPixels,
        neededSize: ((_ width: Int, _ height: Int) -> (width: Int, height: Int))? = nil
    ) throws -> Image {
        try bytes.withUnsafeBufferPointer { data in
            switch try ImageFileFormat(sniffing: data, path: path) {
            case .jpeg:
                return try decodeJPEG(data, path: path, mode: mode, maxPixels: maxPixels, neededSize: neededSize)
            case .png: return try decodePNG(data, path: path, mode: mode, maxPixels: maxPixels)
            }
        }
    }

    /// The (EXIF-oriented) width and height of a JPEG or PNG file, from its header only.
    public static func size(ofImageAt path: String) throws -> (width: Int, height: Int) {
        var prefix = 1 << 16
        while true {
            let bytes = try readFileBytes(path, upTo: prefix)
            let complete = bytes.count < prefix
            let found: (width: Int, height: Int)? = try bytes.withUnsafeBufferPointer { data in
                switch try ImageFileFormat(sniffing: data, path: path) {
                case .png: return try pngHeaderSize(data, path: path)
                case .jpeg:
                    let header = JPEGHeader(data)
                    guard header.reachedScan || complete else { return nil }
                    guard let w = header.width, let h = header.height, w > 0, h > 0 else {
                        throw ImageError.corrupt(path: path, reason: "JPEG has no valid frame header (SOF)")
                    }
                    return header.orientation >= 5 ? (h, w) : (w, h)
                }
            }
            if let found { return found }
            prefix *= 4
        }
    }

    /// The image encoded as an 8-bit RGB or gray PNG (zlib level 6, as PIL).
    public func pngData() throws -> [UInt8] {
        require(channels == 1 || channels == 3, "pngData: \(channels) channels (1 or 3 supported)")
        let io = UnsafeMutablePointer<cpng_io>.allocate(capacity: 1)
        io.initialize(to: cpng_io())
        defer { free(io.pointee.output); io.deallocate() }
        guard let created = cpng_create_write(io) else {
            throw ImageError.writeFailed(path: "<png>", reason: "out of memory")
        }
        var png: png_structp? = created
        var info = png_create_info_struct(created)
        defer { png_destroy_write_struct(&png, &info) }
        guard info != nil else { throw ImageError.writeFailed(path: "<png>", reason: "out of memory") }
        var copy = pixels
        let stride = width * channels
        let failed = copy.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var rows = (0..<height).map { Optional(buffer.baseAddress! + $0 * stride) }
            return cpng_write_image(png, info, png_uint_32(width), png_uint_32(height), Int32(channels), &rows)
        }
        guard failed == 0 else { throw ImageError.writeFailed(path: "<png>", reason: pngMessage(io)) }
        return Array(UnsafeBufferPointer(start: io.pointee.output, count: io.pointee.outputSize))
    }

    /// The image encoded as a baseline JPEG at `quality` (1–100): 4:2:0 chroma subsampling for RGB, as PIL's default.
    public func jpegData(quality: Int = 90) throws -> [UInt8] {
        require(channels == 1 || channels == 3, "jpegData: \(channels) channels (1 or 3 supported)")
        require((1...100).contains(quality), "jpegData: quality \(quality) is outside 1...100")
        guard let handle = tjInitCompress() else {
            throw ImageError.writeFailed(path: "<jpeg>", reason: String(cString: tjGetErrorStr2(nil)))
        }
        defer { tjDestroy(handle) }
        let format = channels == 3 ? TJPF_RGB : TJPF_GRAY
        let subsampling = Int32((channels == 3 ? TJSAMP_420 : TJSAMP_GRAY).rawValue)
        var size = tjBufSize(Int32(width), Int32(height), subsampling)
        guard size != UInt.max else { throw ImageError.writeFailed(path: "<jpeg>", reason: "image too large for JPEG") }
        var out = [UInt8](repeating: 0, count: Int(size))
        let status = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var target = buffer.baseAddress
            return tjCompress2(
                handle, pixels, Int32(width), 0, Int32(height), Int32(format.rawValue), &target, &size,
                subsampling, Int32(quality), TJFLAG_NOREALLOC | TJFLAG_ACCURATEDCT)
        }
        guard status == 0 else {
            throw ImageError.writeFailed(path: "<jpeg>", reason: String(cString: tjGetErrorStr2(handle)))
        }
        return Array(out.prefix(Int(size)))
    }

    /// Writes the image as a PNG (to a temporary file in the same folder, then renamed over `path`).
    public func writePNG(to path: String) throws {
        try Image.writeAtomically(try withPath(path) { try pngData() }, to: path)
    }

    /// Writes the image as a JPEG at `quality` (to a temporary file in the same folder, then renamed over `path`).
    public func writeJPEG(to path: String, quality: Int = 90) throws {
        try Image.writeAtomically(try withPath(path) { try jpegData(quality: quality) }, to: path)
    }

    private func withPath(_ path: String, _ encode: () throws -> [UInt8]) throws -> [UInt8] {
        do { return try encode() } catch let ImageError.writeFailed(_, reason) {
            throw ImageError.writeFailed(path: path, reason: reason)
        }
    }
}

// MARK: - Files

/// The two formats read, told apart by their first bytes.
enum ImageFileFormat {
    case jpeg, png

    init(sniffing data: UnsafeBufferPointer<UInt8>, path: String) throws {
        if data.isEmpty { throw ImageError.corrupt(path: path, reason: "empty file (0 bytes)") }
        if data.count >= 3, data[0] == 0xFF, data[1] == 0xD8, data[2] == 0xFF {
            self = .jpeg
        } else if data.count >= 8, Array(data[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] {
            self = .png
        } else {
            throw ImageError.notAnImage(path: path)
        }
    }
}

extension Image {
    /// The first `limit` bytes of a regular file (all of it when shorter); refuses files over ``maxFileBytes``.
    static func readFileBytes(_ path: String, upTo limit: Int) throws -> [UInt8] {
        func failure(_ what: String) -> ImageError {
            .unreadable(path: path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("cannot open") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("cannot stat") }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw ImageError.unreadable(
                path: path, reason: info.st_mode & S_IFMT == S_IFDIR ? "is a directory" : "not a regular file")
        }
        let size = Int(info.st_size)
        guard size <= maxFileBytes else {
            throw ImageError.unreadable(
                path: path, reason: "file is \(size) bytes, over the \(maxFileBytes >> 20) MiB limit for an image file")
        }
        let wanted = min(size, limit)
        var readError: Int32 = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: wanted) { buffer, count in
            count = 0
            while count < wanted {
                let n = Foundation.read(fd, buffer.baseAddress! + count, wanted - count)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { readError = errno }
                if n <= 0 { break }
                count += n
            }
        }
        guard readError == 0 else { errno = readError; throw failure("read failed") }
        return bytes
    }

    /// Writes `bytes` to a temporary file next to `path`, then renames it to `path`.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func failure(_ what: String) -> ImageError {
            .writeFailed(path: path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("cannot create \(temporary)") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let error = failure("write failed")
                close(fd)
                unlink(temporary)
                throw error
            }
            written += n
        }
        guard close(fd) == 0 else { let error = failure("close failed"); unlink(temporary); throw error }
        guard rename(temporary, path) == 0 else { let error = failure("rename failed"); unlink(temporary); throw error }
    }
}

/// Width and height from the IHDR chunk that must follow a PNG's signature.
func pngHeaderSize(_ data: UnsafeBufferPointer<UInt8>, path: String) throws -> (width: Int, height: Int) {
    guard data.count >= 24, Array(data[12..<16]) == Array("IHDR".utf8) else {
        throw ImageError.corrupt(path: path, reason: "PNG has no IHDR header chunk")
    }
    func u32(_ at: Int) -> Int {
        Int(data[at]) << 24 | Int(data[at + 1]) << 16 | Int(data[at + 2]) << 8 | Int(data[at + 3])
    }
    let (width, height) = (u32(16), u32(20))
    guard (1...Int(Int32.max)).contains(width), (1...Int(Int32.max)).contains(height) else {
        throw ImageError.corrupt(path: path, reason: "PNG header claims an invalid size \(width)x\(height)")
    }
    return (width, height)
}

// MARK: - PNG

extension Image {
    static func decodePNG(_ data: UnsafeBufferPointer<UInt8>, path: String, mode: ImageMode, maxPixels: Int) throws
        -> Image
    {
        // The size check reads IHDR itself, before libpng looks at any other chunk.
        let size = try pngHeaderSize(data, path: path)
        guard size.width * size.height <= maxPixels else {
            throw ImageError.tooLarge(path: path, width: size.width, height: size.height, limit: maxPixels)
        }
        try pngChunksFit(data, path: path)
        let io = UnsafeMutablePointer<cpng_io>.allocate(capacity: 1)
        io.initialize(to: cpng_io())
        defer { io.deallocate() }
        io.pointee.input = data.baseAddress
        io.pointee.inputSize = data.count
        guard let created = cpng_create_read(io) else { throw ImageError.corrupt(path: path, reason: "out of memory") }
        var png: png_structp? = created
        var info = png_create_info_struct(created)
        defer { png_destroy_read_struct(&png, &info, nil) }
        guard info != nil else { throw ImageError.corrupt(path: path, reason: "out of memory") }
        guard cpng_read_info(png, info) == 0 else { throw ImageError.corrupt(path: path, reason: pngMessage(io)) }
        let width = Int(png_get_image_width(png, info)), height = Int(png_get_image_height(png, info))
        let isColour = Int32(png_get_color_type(png, info)) & PNG_COLOR_MASK_COLOR != 0
        // Colour decodes to RGB, gray to gray (replicated by libpng for `.rgb`); colour to gray uses PIL's weights.
        let channels = isColour ? 3 : mode.channels
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        let failed = pixels.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var rows = (0..<height).map { Optional(buffer.baseAddress! + $0 * width * channels) }
            return cpng_read_image(png, info, Int32(channels), &rows)
        }
        guard failed == 0 else { throw ImageError.corrupt(path: path, reason: pngMessage(io)) }
        let image = Image(width: width, height: height, channels: channels, pixels: pixels)
        return channels == mode.channels ? image : image.luma()
    }
}

/// Throws unless every chunk up to IEND lies within the file: libpng allocates the length a chunk claims before
/// reading it, so a 131-byte file claiming a 1.3 GB `zTXt` chunk made it allocate 1.3 GB (found by Fuzz/).
func pngChunksFit(_ data: UnsafeBufferPointer<UInt8>, path: String) throws {
    var at = 8
    while true {
        guard data.count - at >= 12 else {
            throw ImageError.corrupt(path: path, reason: "PNG is truncated: it ends before its IEND chunk")
        }
        let length = Int(data[at]) << 24 | Int(data[at + 1]) << 16 | Int(data[at + 2]) << 8 | Int(data[at + 3])
        let type = String(decoding: UnsafeBufferPointer(rebasing: data[(at + 4)..<(at + 8)]), as: UTF8.self)
        guard length <= data.count - at - 12 else {
            throw ImageError.corrupt(
                path: path,
                reason:
                    """
                    PNG is truncated: its '\(type)' chunk claims \(length) bytes but only \(data.count - at - 12) \
                    follow
                    """
            )
        }
        at += 12 + length
        if type == "IEND" { return }
    }
}

func pngMessage(_ io: UnsafeMutablePointer<cpng_io>) -> String {
    withUnsafeBytes(of: &io.pointee.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

// MARK: - JPEG

extension Image {
    static func decodeJPEG(
        _ data: UnsafeBufferPointer<UInt8>, path: String, mode: ImageMode, maxPixels: Int,
        neededSize: ((Int, Int) -> (width: Int, height: Int))?
    ) throws -> Image {
        guard let handle = tjInitDecompress() else {
            throw ImageError.corrupt(path: path, reason: String(cString: tjGetErrorStr2(nil)))
        }
        defer { tjDestroy(handle) }
        var w: Int32 = 0, h: Int32 = 0, subsampling: Int32 = 0, colourspace: Int32 = 0
        var warning = try jpegWarning(
            tjDecompressHeader3(handle, data.baseAddress, UInt(data.count), &w, &h, &subsampling, &colourspace),
            handle, path)
        let width = Int(w), height = Int(h)
        guard width * height <= maxPixels else {
            throw ImageError.tooLarge(path: path, width: width, height: height, limit: maxPixels)
        }
        let orientation = JPEGHeader(data).orientation
        let denominator =
            neededSize.map { scaleDenominator(width: width, height: height, orientation: orientation, needed: $0) } ?? 1
        let outWidth = (width + denominator - 1) / denominator, outHeight = (height + denominator - 1) / denominator

        let format: TJPF
        switch colourspace {
        case Int32(TJCS_CMYK.rawValue), Int32(TJCS_YCCK.rawValue): format = TJPF_CMYK
        case Int32(TJCS_GRAY.rawValue): format = TJPF_GRAY
        default: format = TJPF_RGB
        }
        let channels = format == TJPF_CMYK ? 4 : format == TJPF_GRAY ? 1 : 3
        let decoded = try [UInt8](unsafeUninitializedCapacity: outWidth * outHeight * channels) { buffer, count in
            let status = tjDecompress2(
                handle, data.baseAddress, UInt(data.count), buffer.baseAddress, Int32(outWidth), 0,
                Int32(outHeight), Int32(format.rawValue), 0)
            warning = try jpegWarning(status, handle, path) ?? warning
            count = outWidth * outHeight * channels
        }
        // libjpeg pads a file that ends early with a fake end marker and only warns; PIL refuses such files.
        if let warning, warning.contains("Premature end of JPEG file") || !jpegReachesEndMarker(data) {
            throw ImageError.corrupt(path: path, reason: "image file is truncated (\(warning))")
        }
        var image = Image(width: outWidth, height: outHeight, channels: channels, pixels: decoded)
        if format == TJPF_CMYK { image = image.rgbFromInvertedCMYK() }
        if image.channels != mode.channels { image = mode == .gray ? image.luma() : image.replicatedGray() }
        return image.oriented(orientation)
    }

    /// Throws a TurboJPEG error; returns the message of a warning (libjpeg decoded anyway), nil on success.
    static func jpegWarning(_ status: Int32, _ handle: tjhandle, _ path: String) throws -> String? {
        guard status != 0 else { return nil }
        let message = String(cString: tjGetErrorStr2(handle))
        guard tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue) else {
            throw ImageError.corrupt(path: path, reason: message)
        }
        return message
    }

    /// The DCT scaling denominator (8, 4, 2 or 1) giving the smallest decoded size still at least `needed`.
    static func scaleDenominator(
        width: Int, height: Int, orientation: Int,
        needed: (Int, Int) -> (width: Int, height: Int)
    ) -> Int {
        let swaps = orientation >= 5
        let want = swaps ? needed(height, width) : needed(width, height)
        let (needW, needH) = swaps ? (want.height, want.width) : (want.width, want.height)
        for d in [8, 4, 2] where (width + d - 1) / d >= needW && (height + d - 1) / d >= needH { return d }
        return 1
    }
}

/// What a JPEG's markers before the first scan say: frame size (SOF) and EXIF orientation (1 when absent).
struct JPEGHeader {
    var width: Int?, height: Int?
    var orientation = 1
    /// Whether the walk reached the start of scan, so nothing more can be learnt from later bytes.
    var reachedScan = false

    init(_ b: UnsafeBufferPointer<UInt8>) {
        var i = 2
        var sawExif = false
        while i + 3 < b.count {
            guard b[i] == 0xFF else { i += 1; continue }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }
            if marker == 0x01 || (0xD0...0xD8).contains(marker) { i += 2; continue }
            if marker == 0xD9 || marker == 0xDA { reachedScan = true; return }
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            let start = i + 4, end = i + 2 + length
            guard length >= 2, end <= b.count else { return }
            if (0xC0...0xCF).contains(marker), ![0xC4, 0xC8, 0xCC].contains(marker), length >= 7 {
                height = Int(b[start + 1]) << 8 | Int(b[start + 2])
                width = Int(b[start + 3]) << 8 | Int(b[start + 4])
            } else if marker == 0xE1, !sawExif, length >= 8, Array(b[start..<start + 6]) == Array("Exif\0\0".utf8) {
                sawExif = true  // PIL reads the first Exif segment only
                orientation = exifOrientation(UnsafeBufferPointer(rebasing: b[(start + 6)..<end]))
            }
            i = end
        }
    }
}

/// The orientation tag (0x0112) of IFD0 of a TIFF-structured EXIF block, 1 when absent or invalid.
func exifOrientation(_ t: UnsafeBufferPointer<UInt8>) -> Int {
    guard t.count >= 8 else { return 1 }
    let little: Bool
    switch (t[0], t[1]) {
    case (0x49, 0x49): little = true
    case (0x4D, 0x4D): little = false
    default: return 1
    }
    func u16(_ at: Int) -> Int { little ? Int(t[at]) | Int(t[at + 1]) << 8 : Int(t[at]) << 8 | Int(t[at + 1]) }
    func u32(_ at: Int) -> Int { little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2) }
    guard u16(2) == 42 else { return 1 }
    let ifd = u32(4)
    guard ifd >= 8, ifd + 2 <= t.count else { return 1 }
    for k in 0..<u16(ifd) {
        let entry = ifd + 2 + 12 * k
        guard entry + 12 <= t.count else { break }
        guard u16(entry) == 0x0112 else { continue }
        let value: Int
        switch u16(entry + 2) {
        case 3: value = u16(entry + 8)
        case 4: value = u32(entry + 8)
        default: value = 1
        }
        return (1...8).contains(value) ? value : 1
    }
    return 1
}

/// Whether a JPEG's segments and entropy-coded data lead to an end-of-image marker (EOI) within the bytes.
func jpegReachesEndMarker(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
    var i = 2
    while i + 1 < b.count {
        guard b[i] == 0xFF else { i += 1; continue }
        let marker = b[i + 1]
        if marker == 0xD9 { return true }
        if marker == 0xFF { i += 1; continue }
        if marker == 0x00 || marker == 0x01 || (0xD0...0xD8).contains(marker) { i += 2; continue }
        // A segment (within entropy-coded data every 0xFF is followed by 0x00 or a restart marker, skipped above).
        guard i + 3 < b.count else { return false }
        i += 2 + (Int(b[i + 2]) << 8 | Int(b[i + 3]))
    }
    return false
}

// MARK: - Pixel conversions

extension Image {
    /// Gray from RGB with PIL's `L` weights (ITU-R 601-2 luma in 16-bit fixed point, rounded).
    func luma() -> Image {
        precondition(channels == 3)
        let n = width * height
        let out = pixels.withUnsafeBufferPointer { p in
            [UInt8](unsafeUninitializedCapacity: n) { o, count in
                for i in 0..<n {
                    let r = UInt32(p[3 * i]), g = UInt32(p[3 * i + 1]), b = UInt32(p[3 * i + 2])
                    o[i] = UInt8(truncatingIfNeeded: (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
                }
                count = n
            }
        }
        return Image(width: width, height: height, channels: 1, pixels: out)
    }

    /// RGB with each gray value repeated.
    func replicatedGray() -> Image {
        precondition(channels == 1)
        let n = width * height
        let out = pixels.withUnsafeBufferPointer { p in
            [UInt8](unsafeUninitializedCapacity: 3 * n) { o, count in
                for i in 0..<n { o[3 * i] = p[i]; o[3 * i + 1] = p[i]; o[3 * i + 2] = p[i] }
                count = 3 * n
            }
        }
        return Image(width: width, height: height, channels: 3, pixels: out)
    }

    /// RGB from libjpeg's CMYK output as PIL converts it: PIL reads JPEG CMYK as Adobe-inverted ("CMYK;I"),
    /// then `convert("RGB")` computes `(255 − K) − C·(255 − K)/255` per channel with its rounded /255.
    func rgbFromInvertedCMYK() -> Image {
        precondition(channels == 4)
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let nk = Int(pixels[4 * i + 3])  // 255 − K with K = 255 − stored value
            for c in 0..<3 {
                let t = (255 - Int(pixels[4 * i + c])) * nk + 128
                out[3 * i + c] = UInt8(clamping: nk - (((t >> 8) + t) >> 8))
            }
        }
        return Image(width: width, height: height, channels: 3, pixels: out)
    }

    /// The image transposed, flipped or rotated as EXIF `orientation` (1–8) asks, as PIL's `exif_transpose`.
    func oriented(_ orientation: Int) -> Image {
        guard orientation != 1 else { return self }
        let w = width, h = height, last = (h - 1) * w
        // Source pixel of output (row r, column c) = start + r·rowStep + c·columnStep.
        let (start, rowStep, columnStep): (Int, Int, Int)
        switch orientation {
        case 2: (start, rowStep, columnStep) = (w - 1, w, -1)
        case 3: (start, rowStep, columnStep) = (last + w - 1, -w, -1)
        case 4: (start, rowStep, columnStep) = (last, -w, 1)
        case 5: (start, rowStep, columnStep) = (0, 1, w)
        case 6: (start, rowStep, columnStep) = (last, 1, -w)
        case 7: (start, rowStep, columnStep) = (last + w - 1, -1, -w)
        default: (start, rowStep, columnStep) = (w - 1, -1, w)
        }
        let (outW, outH) = orientation >= 5 ? (h, w) : (w, h)
        let ch = channels
        var out = [UInt8](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                var o = 0
                for r in 0..<outH {
                    var s = start + r * rowStep
                    for _ in 0..<outW {
                        for k in 0..<ch { dst[o + k] = src[s * ch + k] }
                        o += ch
                        s += columnStep
                    }
                }
            }
        }
        return Image(width: outW, height: outH, channels: ch, pixels: out)
    }
}
