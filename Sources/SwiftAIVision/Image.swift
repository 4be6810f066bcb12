import SwiftAICore

/// An 8-bit image: `height` rows of `width` pixels of `channels` interleaved values (HWC, as decoders produce and
/// channels-last batches want).
public struct Image: Equatable {
    public var width: Int
    public var height: Int
    /// 3 (RGB) or 1 (gray).
    public var channels: Int
    /// `height * width * channels` values, row by row.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        require(
            width >= 0 && height >= 0 && channels >= 1 && pixels.count == width * height * channels,
            "Image: \(pixels.count) values for \(width)x\(height)x\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// An image filled with `value`.
    public init(width: Int, height: Int, channels: Int, fill value: UInt8 = 0) {
        self.init(
            width: width, height: height, channels: channels,
            pixels: [UInt8](repeating: value, count: width * height * channels))
    }

    /// The value at row `y`, column `x`, channel `c`.
    public subscript(y: Int, x: Int, c: Int) -> UInt8 {
        get { pixels[(y * width + x) * channels + c] }
        set { pixels[(y * width + x) * channels + c] = newValue }
    }

    /// As a `uint8` tensor `[channels, height, width]` (channels-last strides, no copy of layout).
    public var tensor: Tensor {
        Tensor(pixels, shape: [height, width, channels]).permute([2, 0, 1])
    }
}

/// Colour mode images are decoded to (fastai's `PILImage` vs `PILImageBW`).
public enum ImageMode: String, Sendable {
    case rgb, gray
    public var channels: Int { self == .rgb ? 3 : 1 }
}

/// A transform of single images, run on the loader's workers before collation (fastai's `item_tfms`).
///
/// Composed by ``order`` as fastai orders them (`Resize` and `RandomResizedCrop` are 1). Random choices draw from
/// `generator` (seeded per item) and only when `training` is true; validation items get the deterministic variant
/// (centre crop).
public protocol ItemTransform: CustomStringConvertible {
    var order: Int { get }
    func apply(_ image: Image, generator: Generator, training: Bool) -> Image
    /// The smallest decoded size from which this transform still produces its full-quality output, for an image
    /// of `width`×`height`: when it is 2× or more smaller, JPEGs are decoded already scaled (libjpeg's DCT scaling).
    /// The default keeps the full size.
    func neededSourceSize(width: Int, height: Int) -> (width: Int, height: Int)
}

extension ItemTransform {
    public func neededSourceSize(width: Int, height: Int) -> (width: Int, height: Int) { (width, height) }
    public var description: String { String(describing: type(of: self)) }
}

/// Why an image file could not be used.
public enum ImageError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read (missing, a directory, no permission).
    case unreadable(path: String, reason: String)
    /// The file is neither a JPEG nor a PNG (by its first bytes).
    case notAnImage(path: String)
    /// The decoder rejected it: truncated, corrupt, unsupported; `reason` is the decoder's.
    case corrupt(path: String, reason: String)
    /// More pixels than the configured limit (a decompression bomb guard).
    case tooLarge(path: String, width: Int, height: Int, limit: Int)
    /// Writing failed.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read image \(path): \(reason)"
        case let .notAnImage(path): return "\(path) is not a JPEG or PNG image (unrecognised file signature)"
        case let .corrupt(path, reason): return "cannot decode \(path): \(reason)"
        case let .tooLarge(path, w, h, limit):
            return
                """
                \(path) is \(w)x\(h) = \(w * h) pixels, over the limit of \(limit); raise `maxPixels` (CLI: \
                --max-pixels) if the image is genuine
                """
        case let .writeFailed(path, reason): return "cannot write \(path): \(reason)"
        }
    }

    /// The file the error is about.
    public var path: String {
        switch self {
        case let .unreadable(p, _), let .notAnImage(p), let .corrupt(p, _), let .tooLarge(p, _, _, _),
            let .writeFailed(p, _):
            return p
        }
    }
}
