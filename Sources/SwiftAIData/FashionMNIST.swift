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

/// Reads gzip-compressed files.
enum Gzip {
    static func decompress(path: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DatasetError.missing(path: path, hint: "")
        }
        guard let f = gzopen(path, "rb") else { throw DatasetError.unreadable(path: path, reason: "gzopen failed") }
        defer { gzclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if n < 0 { throw DatasetError.unreadable(path: path, reason: "corrupt gzip stream") }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
        }
        return out
    }
}

/// IDX files (the MNIST family's format): big-endian magic `0x0000 08 NDIM`, NDIM big-endian sizes, then bytes.
public enum IDX {
    /// Decodes an IDX file of unsigned bytes (optionally gzip-compressed) into a `uint8` tensor.
    public static func read(path: String) throws -> Tensor {
        let bytes = path.hasSuffix(".gz") ? try Gzip.decompress(path: path) : try readPlain(path)
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else { throw DatasetError.malformed(path: path, reason: "bad magic number") }
        guard bytes[2] == 0x08 else { throw DatasetError.malformed(path: path, reason: "element type \(bytes[2]) is not unsigned byte") }
        let ndim = Int(bytes[3])
        guard ndim >= 1, bytes.count >= 4 + 4 * ndim else { throw DatasetError.malformed(path: path, reason: "truncated header") }
        var shape: [Int] = []
        for d in 0..<ndim {
            let o = 4 + 4 * d
            shape.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        let n = shape.reduce(1, *), start = 4 + 4 * ndim
        guard bytes.count - start == n else {
            throw DatasetError.malformed(path: path, reason: "header says \(n) values for shape \(shape), file has \(bytes.count - start)")
        }
        return Tensor(Array(bytes[start...]), shape: shape)
    }

    private static func readPlain(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw DatasetError.missing(path: path, hint: "")
        }
        return [UInt8](d)
    }
}

/// Fashion-MNIST (Zalando): 60 000 training and 10 000 test images of 28×28 clothing items in 10 classes.
public struct FashionMNIST {
    /// Where Debian's `dataset-fashion-mnist` installs it; override with `FMNIST_DIR` or `directory:`.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
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
                throw DatasetError.missing(path: p, hint: "Install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (or `make setup`), or point FMNIST_DIR / --data at a folder holding the four *-ubyte.gz files.")
            }
        }
        trainImages = try load("train-images-idx3-ubyte.gz")
        trainLabels = try load("train-labels-idx1-ubyte.gz").to(.int64)
        testImages = try load("t10k-images-idx3-ubyte.gz")
        testLabels = try load("t10k-labels-idx1-ubyte.gz").to(.int64)
        for (imgs, labels, what) in [(trainImages, trainLabels, "train"), (testImages, testLabels, "test")] {
            guard imgs.rank == 3, imgs.shape[1] == 28, imgs.shape[2] == 28, labels.shape == [imgs.shape[0]] else {
                throw DatasetError.malformed(path: dir, reason: "\(what) images \(imgs.shape) and labels \(labels.shape) do not match")
            }
        }
    }

    /// Images as normalised float32 `[N, 1, 28, 28]`: `(x/255 − 0.28)/0.35`, as the lesson.
    public static func normalise(_ images: Tensor) -> Tensor {
        (images.to(.float32) / 255 - mean) / std
    }
}
