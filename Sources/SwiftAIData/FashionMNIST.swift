import CZlib
import Foundation
import SwiftAICore

/// Why a dataset could not be loaded.
public enum DatasetError: Error, CustomStringConvertible, Equatable {
    case missing(path: String, hint: String)
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .missing(path, hint): return "dataset file not found: \(path). \(hint)"
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformed(path, reason): return "\(path) is not a valid IDX file: \(reason). Reinstall the dataset."
        }
    }
}

/// Inflates gzip data in memory.
enum Gzip {
    /// Whether `bytes` start with the gzip magic number.
    static func isCompressed(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B }

    /// The concatenated contents of every gzip member of `bytes`. `limit` is asked, with the output so far, for the
    /// most bytes the output may have (`nil` while unknown): a header inside the data can stop a decompression bomb.
    static func decompress(_ bytes: [UInt8], path: String, limit: ([UInt8]) throws -> Int?) throws -> [UInt8] {
        guard bytes.count <= Int(UInt32.max) else {
            throw DatasetError.unreadable(path: path, reason: "gzip file over 4 GiB")
        }
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DatasetError.unreadable(path: path, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        try bytes.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = UInt32(input.count)
            while true {
                let status = chunk.withUnsafeMutableBufferPointer { c -> Int32 in
                    stream.next_out = c.baseAddress
                    stream.avail_out = UInt32(c.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                out.append(contentsOf: chunk[0..<(chunk.count - Int(stream.avail_out))])
                if let limit = try limit(out), out.count > limit {
                    throw DatasetError.malformed(
                        path: path, reason: "it decompresses to more than the \(limit) bytes its header declares")
                }
                switch status {
                case Z_OK: continue
                case Z_STREAM_END:
                    // Another member may follow (as `cat a.gz b.gz`); trailing zero padding is ignored, as gzip does.
                    let rest = UnsafeBufferPointer(start: stream.next_in, count: Int(stream.avail_in))
                    if rest.allSatisfy({ $0 == 0 }) { return }
                    guard inflateReset(&stream) == Z_OK else {
                        throw DatasetError.unreadable(path: path, reason: "corrupt gzip stream")
                    }
                case Z_BUF_ERROR where stream.avail_in == 0:
                    throw DatasetError.unreadable(path: path, reason: "gzip stream is truncated")
                default:
                    throw DatasetError.unreadable(path: path, reason: "corrupt gzip stream")
                }
            }
        }
        return out
    }
}

/// IDX files (the MNIST family's format): big-endian magic `0x0000 08 NDIM`, NDIM big-endian sizes, then bytes.
public enum IDX {
    /// Reads an IDX file of unsigned bytes (optionally gzip-compressed) into a `uint8` tensor.
    public static func read(path: String) throws -> Tensor {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw DatasetError.missing(path: path, hint: "")
        }
        return try decode([UInt8](d), path: path)
    }

    /// Decodes the bytes of an IDX file (gzip-compressed or not); `path` names it in errors.
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> Tensor {
        let bytes =
            Gzip.isCompressed(bytes)
            ? try Gzip.decompress(bytes, path: path) { try header($0, path: path)?.fileSize } : bytes
        guard let (shape, fileSize) = try header(bytes, path: path) else {
            throw DatasetError.malformed(path: path, reason: "truncated header")
        }
        let start = 4 + 4 * shape.count
        guard bytes.count == fileSize else {
            throw DatasetError.malformed(
                path: path,
                reason: "header says \(fileSize - start) values for shape \(shape), file has \(bytes.count - start)")
        }
        return Tensor(Array(bytes[start...]), shape: shape)
    }

    /// The sizes in the header at the start of `bytes` and the file size they imply; nil while the header is
    /// incomplete.
    private static func header(_ bytes: [UInt8], path: String) throws -> (shape: [Int], fileSize: Int)? {
        guard bytes.count >= 4 else { return nil }
        guard bytes[0] == 0, bytes[1] == 0 else { throw DatasetError.malformed(path: path, reason: "bad magic number") }
        guard bytes[2] == 0x08 else {
            throw DatasetError.malformed(path: path, reason: "element type \(bytes[2]) is not unsigned byte")
        }
        let ndim = Int(bytes[3]), start = 4 + 4 * ndim
        guard ndim >= 1 else { throw DatasetError.malformed(path: path, reason: "it declares no dimensions") }
        guard bytes.count >= start else { return nil }
        var shape: [Int] = []
        // Products of the sizes (a 0 counted as 1 in `extent`, as in strides) must not overflow, even for no values.
        var count = 1, extent = 1, overflow = false
        for d in 0..<ndim {
            let o = 4 + 4 * d
            let n = Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
            shape.append(n)
            (extent, overflow) = extent.multipliedReportingOverflow(by: Swift.max(n, 1))
            guard !overflow else { break }
            count *= n
        }
        let (fileSize, tooLarge) = count.addingReportingOverflow(start)
        guard !overflow, !tooLarge else {
            throw DatasetError.malformed(path: path, reason: "sizes \(shape) are too large")
        }
        return (shape, fileSize)
    }
}

/// Fashion-MNIST (Zalando): 60 000 training and 10 000 test images of 28×28 clothing items in 10 classes.
public struct FashionMNIST {
    /// Where Debian's `dataset-fashion-mnist` installs it; override with `FMNIST_DIR` or `directory:`.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let classes = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ]
    /// The lesson's normalisation.
    public static let mean = 0.28, std = 0.35

    /// `uint8` images `[N, 28, 28]` and `int64` labels `[N]`.
    public let trainImages: Tensor, trainLabels: Tensor, testImages: Tensor, testLabels: Tensor

    /// Loads the four IDX files; a missing file throws ``DatasetError/missing(path:hint:)`` saying how to install.
    public init(directory: String? = nil) throws {
        let dir = directory ?? ProcessInfo.processInfo.environment["FMNIST_DIR"] ?? FashionMNIST.defaultDirectory
        func load(_ name: String) throws -> Tensor {
            let path = dir + "/" + name
            do {
                return try IDX.read(path: path)
            } catch DatasetError.missing(let p, _) {
                throw DatasetError.missing(
                    path: p,
                    hint:
                        """
                        Install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (or `make setup`), or \
                        point FMNIST_DIR / --data at a folder holding the four *-ubyte.gz files.
                        """
                )
            }
        }
        trainImages = try load("train-images-idx3-ubyte.gz")
        trainLabels = try load("train-labels-idx1-ubyte.gz").to(.int64)
        testImages = try load("t10k-images-idx3-ubyte.gz")
        testLabels = try load("t10k-labels-idx1-ubyte.gz").to(.int64)
        for (imgs, labels, what) in [(trainImages, trainLabels, "train"), (testImages, testLabels, "test")] {
            guard imgs.rank == 3, imgs.shape[1] == 28, imgs.shape[2] == 28, labels.shape == [imgs.shape[0]] else {
                throw DatasetError.malformed(
                    path: dir, reason: "\(what) images \(imgs.shape) and labels \(labels.shape) do not match")
            }
        }
    }

    /// Images as normalised float32 `[N, 1, 28, 28]`: `(x/255 − 0.28)/0.35`, as the lesson.
    public static func normalise(_ images: Tensor) -> Tensor {
        (images.to(.float32) / 255 - mean) / std
    }
}
