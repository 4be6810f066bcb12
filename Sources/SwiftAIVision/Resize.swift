import Foundation
import SwiftAICore

/// How ``Resize`` fits an image to a different aspect ratio (fastai's `ResizeMethod`).
public enum ResizeMethod: String, Sendable {
    /// Crop the largest window of the target aspect ratio, then resize it.
    case crop
    /// Pad to the target aspect ratio (with a ``PadMode``), then resize.
    case pad
    /// Resize the whole image, distorting its aspect ratio.
    case squish
}

/// How pixels outside an image are filled (fastai's `PadMode`, torchvision's `reflect` / `constant` / `edge`).
public enum PadMode: String, Sendable {
    /// Mirror about the edge pixel, without repeating it (`dcb|abcd|cba`).
    case reflection
    /// Zeros.
    case zeros
    /// Replicate the edge pixel.
    case border
}

/// A window of an image, in source pixels; it may extend past the image's edges (then padded).
struct CropWindow: Equatable {
    var x: Int
    var y: Int
    var width: Int
    var height: Int
}

extension Image {
    /// The `width`×`height` region whose top-left pixel is (`x`, `y`); it must lie inside the image.
    public func cropped(x: Int, y: Int, width w: Int, height h: Int) -> Image {
        require(
            w >= 0 && h >= 0 && x >= 0 && y >= 0 && x + w <= width && y + h <= height,
            "Image.cropped: region \(w)x\(h) at (\(x), \(y)) must lie inside the \(width)x\(height) image")
        var out = [UInt8](repeating: 0, count: w * h * channels)
        let rowBytes = w * channels
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for row in 0..<h {
                    (dst.baseAddress! + row * rowBytes).update(
                        from: src.baseAddress! + ((y + row) * width + x) * channels,
                        count: rowBytes)
                }
            }
        }
        return Image(width: w, height: h, channels: channels, pixels: out)
    }

    /// This image with `left`, `top`, `right`, `bottom` pixels added, filled per `mode` as torchvision's `pad`
    /// (NumPy's `reflect` keeps mirroring when a pad is wider than the image; a 1-pixel side replicates).
    public func padded(left: Int, top: Int, right: Int, bottom: Int, mode: PadMode) -> Image {
        require(
            left >= 0 && top >= 0 && right >= 0 && bottom >= 0,
            "Image.padded: pads (\(left), \(top), \(right), \(bottom)) must be non-negative")
        require(
            width > 0 && height > 0 || mode == .zeros,
            "Image.padded: cannot \(mode)-pad an empty \(width)x\(height) image")
        let w = width + left + right, h = height + top + bottom, c = channels
        // Source index for each output column / row; -1 means zero fill.
        func sources(_ count: Int, _ before: Int, _ size: Int) -> [Int] {
            (0..<count).map { o in
                let i = o - before
                if i >= 0 && i < size { return i }
                switch mode {
                case .zeros: return -1
                case .border: return min(max(i, 0), size - 1)
                case .reflection:
                    guard size > 1 else { return 0 }
                    let period = 2 * (size - 1)
                    let m = ((i % period) + period) % period
                    return m < size ? m : period - m
                }
            }
        }
        let xs = sources(w, left, width), ys = sources(h, top, height)
        var out = [UInt8](repeating: 0, count: w * h * c)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for (row, sy) in ys.enumerated() where sy >= 0 {
                    let line = src.baseAddress! + sy * width * c, o = dst.baseAddress! + row * w * c
                    for (col, sx) in xs.enumerated() where sx >= 0 {
                        for ch in 0..<c { o[col * c + ch] = line[sx * c + ch] }
                    }
                }
            }
        }
        return Image(width: w, height: h, channels: c, pixels: out)
    }

    /// fastai's `crop_pad(…, resize_to=)`: the window cropped to the image, padded back to its size with `padMode`,
    /// then bilinearly resized to `toWidth`×`toHeight` (a window inside the image is resampled without a copy).
    func cropPadResized(_ window: CropWindow, padMode: PadMode, toWidth: Int, toHeight: Int) -> Image {
        let x0 = max(window.x, 0), y0 = max(window.y, 0)
        let x1 = min(window.x + window.width, width), y1 = min(window.y + window.height, height)
        let left = x0 - window.x, top = y0 - window.y
        let right = window.x + window.width - x1, bottom = window.y + window.height - y1
        if left == 0 && top == 0 && right == 0 && bottom == 0 {
            return resizedRegion(
                x: x0, y: y0, width: x1 - x0, height: y1 - y0, toWidth: toWidth, toHeight: toHeight,
                resampling: .bilinear)
        }
        return cropped(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
            .padded(left: left, top: top, right: right, bottom: bottom, mode: padMode)
            .resized(width: toWidth, height: toHeight)
    }
}

/// The size `width`×`height` scaled by `s` and rounded up, or unchanged when `s` ≥ 1 (never upscaled).
/// A 1e-6 tolerance keeps an exact product such as 1500 · (460 / 1500) from rounding up to 461.
private func scaledSize(_ width: Int, _ height: Int, by s: Double) -> (width: Int, height: Int) {
    guard s < 1 else { return (width, height) }
    func up(_ n: Int) -> Int { min(n, Int((Double(n) * s - 1e-6).rounded(.up))) }
    return (up(width), up(height))
}

/// Resizes images to `width`×`height` by cropping, padding or squishing (fastai's `Resize`, bilinear).
///
/// Training crops (or pads) at a random position, validation at the centre; squish ignores the position.
public struct Resize: ItemTransform {
    public var width: Int
    public var height: Int
    public var method: ResizeMethod
    public var padMode: PadMode
    public var order: Int { 1 }

    /// A square `size`×`size` output.
    public init(_ size: Int, method: ResizeMethod = .crop, padMode: PadMode = .reflection) {
        self.init(height: size, width: size, method: method, padMode: padMode)
    }

    /// A `width`×`height` output (fastai's `Resize((height, width))`).
    public init(height: Int, width: Int, method: ResizeMethod = .crop, padMode: PadMode = .reflection) {
        require(width > 0 && height > 0, "Resize: size \(width)x\(height) must be positive")
        self.width = width
        self.height = height
        self.method = method
        self.padMode = padMode
    }

    public var description: String { "Resize(\(width)x\(height), \(method), \(padMode))" }

    public func apply(_ image: Image, generator: Generator, training: Bool) -> Image {
        apply(image, pcts: method == .squish ? (0.5, 0.5) : pcts(generator: generator, training: training))
    }

    /// fastai's `pcts`: the window's relative position, uniform when training, centred otherwise.
    func pcts(generator: Generator, training: Bool) -> (Double, Double) {
        training ? (generator.nextDouble(), generator.nextDouble()) : (0.5, 0.5)
    }

    /// The transform with the window position pinned to `pcts` (x, y).
    func apply(_ image: Image, pcts: (Double, Double)) -> Image {
        image.cropPadResized(
            window(width: image.width, height: image.height, pcts: pcts), padMode: padMode,
            toWidth: width, toHeight: height)
    }

    /// fastai's `Resize.encodes` arithmetic: the window of the output's aspect ratio that fits inside (crop) or
    /// around (pad) a `w`×`h` image, at `pcts` of the slack, truncated as Python's `int`.
    func window(width w: Int, height h: Int, pcts: (Double, Double)) -> CropWindow {
        if method == .squish { return CropWindow(x: 0, y: 0, width: w, height: h) }
        let rw = Double(w) / Double(width), rh = Double(h) / Double(height)
        let m = (method == .pad ? rw > rh : rw < rh) ? rw : rh
        let cw = Int(m * Double(width)), ch = Int(m * Double(height))
        return CropWindow(x: Int(pcts.0 * Double(w - cw)), y: Int(pcts.1 * Double(h - ch)), width: cw, height: ch)
    }

    /// The smallest uniformly scaled source whose crop window (or padded image) still holds the output size.
    public func neededSourceSize(width w: Int, height h: Int) -> (width: Int, height: Int) {
        let sx = Double(width) / Double(w), sy = Double(height) / Double(h)
        return scaledSize(w, h, by: method == .pad ? min(sx, sy) : max(sx, sy))
    }
}

/// A random crop of random area and aspect ratio, resized to `width`×`height` (fastai's `RandomResizedCrop`, bilinear).
///
/// Training: up to 10 draws of an area fraction uniform in `minScale...maxScale` and a log-uniform aspect ratio in
/// `ratio`, kept when the window fits; else the largest centred window within `ratio`. Validation: the whole image
/// squished to the size plus `valXtra` of margin (rounded up to a multiple of 8), then centre-cropped.
public struct RandomResizedCrop: ItemTransform {
    public var width: Int
    public var height: Int
    public var minScale: Double
    public var maxScale: Double
    /// Range of width / height of the crop window.
    public var ratio: (Double, Double)
    public var valXtra: Double
    public var order: Int { 1 }

    /// A square `size`×`size` output.
    public init(
        _ size: Int, minScale: Double = 0.08, ratio: (Double, Double) = (3.0 / 4, 4.0 / 3), valXtra: Double = 0.14,
        maxScale: Double = 1
    ) {
        self.init(height: size, width: size, minScale: minScale, ratio: ratio, valXtra: valXtra, maxScale: maxScale)
    }

    /// A `width`×`height` output (fastai's `RandomResizedCrop((height, width))`).
    public init(
        height: Int, width: Int, minScale: Double = 0.08, ratio: (Double, Double) = (3.0 / 4, 4.0 / 3),
        valXtra: Double = 0.14, maxScale: Double = 1
    ) {
        require(width > 0 && height > 0, "RandomResizedCrop: size \(width)x\(height) must be positive")
        require(
            minScale > 0 && minScale <= maxScale && ratio.0 > 0 && ratio.0 <= ratio.1 && valXtra >= 0,
            """
            RandomResizedCrop: need 0 < minScale (\(minScale)) <= maxScale (\(maxScale)), 0 < ratio.0 <= ratio.1 \
            \(ratio), valXtra (\(valXtra)) >= 0
            """
        )
        self.width = width
        self.height = height
        self.minScale = minScale
        self.maxScale = maxScale
        self.ratio = ratio
        self.valXtra = valXtra
    }

    public var description: String { "RandomResizedCrop(\(width)x\(height), scale \(minScale)...\(maxScale))" }

    /// Validation margin: `ceil(max(size) · valXtra / 8) · 8` pixels.
    var validationExtra: Int { Int((Double(max(width, height)) * valXtra / 8).rounded(.up)) * 8 }

    public func apply(_ image: Image, generator: Generator, training: Bool) -> Image {
        guard training else {
            let xtra = validationExtra
            let squished = image.resized(width: width + xtra, height: height + xtra)
            return xtra == 0 ? squished : squished.cropped(x: xtra / 2, y: xtra / 2, width: width, height: height)
        }
        let window = trainingWindow(
            width: image.width, height: image.height,
            uniform: { a, b in a + (b - a) * generator.nextDouble() },
            randint: { a, b in a + generator.nextInt(in: 0..<(b - a + 1)) })
        return image.cropPadResized(window, padMode: .zeros, toWidth: width, toHeight: height)
    }

    /// fastai's training window for a `w`×`h` image; `uniform(a, b)` and `randint(a, b)` (inclusive) are the draws,
    /// as Python's `random.uniform` / `random.randint`, in fastai's order.
    func trainingWindow(
        width w: Int, height h: Int, uniform: (Double, Double) -> Double,
        randint: (Int, Int) -> Int
    ) -> CropWindow {
        for _ in 0..<10 {
            let area = uniform(minScale, maxScale) * Double(w) * Double(h)
            let r = exp(uniform(log(ratio.0), log(ratio.1)))
            // Python's round() ties to even.
            let nw = Int((area * r).squareRoot().rounded(.toNearestOrEven))
            let nh = Int((area / r).squareRoot().rounded(.toNearestOrEven))
            if nw <= w && nh <= h {
                let x = randint(0, w - nw)
                return CropWindow(x: x, y: randint(0, h - nh), width: nw, height: nh)
            }
        }
        let aspect = Double(w) / Double(h)
        let (cw, ch) =
            aspect < ratio.0 ? (w, Int(Double(w) / ratio.0)) : aspect > ratio.1 ? (Int(Double(h) * ratio.1), h) : (w, h)
        return CropWindow(x: (w - cw) / 2, y: (h - ch) / 2, width: cw, height: ch)
    }

    /// The smallest uniformly scaled source whose smallest training window (area `minScale`, extreme ratio) and
    /// validation squish still hold the output size.
    public func neededSourceSize(width w: Int, height h: Int) -> (width: Int, height: Int) {
        let area = minScale * Double(w) * Double(h)
        let minW = (area * ratio.0).squareRoot(), minH = (area / ratio.1).squareRoot()
        let xtra = Double(validationExtra)
        let s = max(
            Double(width) / minW, Double(height) / minH,
            (Double(width) + xtra) / Double(w), (Double(height) + xtra) / Double(h))
        return scaledSize(w, h, by: s)
    }
}
