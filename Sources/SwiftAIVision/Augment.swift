import SwiftAICore
import SwiftAIData
#if canImport(Glibc)
    import Glibc
#endif

// fastai's GPU batch augmentations (`aug_transforms`) as batch transforms that fuse into one CPU pass per item:
// IntToFloat (10) → AffineCoordTransform and RandomResizedCropGPU (30) → Lighting (40) → Normalize (99).

/// Interpolation of the batch resample (`F.grid_sample`'s modes).
public enum ResampleMode: String, Sendable {
    case bilinear, nearest
}

/// Converts a batch to float32 divided by `div` (fastai's `IntToFloatTensor`, order 10).
///
/// In a ``BatchPipeline`` it fuses with the geometric, lighting and normalisation transforms after it: the fused
/// pass reads the uint8 channels-last batch directly and writes the final float32 channels-last batch.
public struct IntToFloat: BatchTransform {
    public let order = 10
    public var div: Double

    public init(div: Double = 255) { self.div = div }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        (batch.x.to(.float32) / div, batch.y)
    }

    public func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)? {
        FusedAugment.fuse(self, following)
    }

    public var description: String { "IntToFloat" }
}

/// Random flips, dihedral symmetries, rotations, zooms and perspective warps applied as one resample (fastai's
/// `AffineCoordTfm` as `setup_aug_tfms` composes `Flip`/`Dihedral`, `Rotate`, `Zoom` and `Warp`; order 30).
///
/// Each item draws its own transform (fastai's `_draw_mask`: every draw falls back to its neutral value with
/// probability `1 - p`); matrices multiply as flip · rotation · zoom in normalised coordinates, and the warp acts on
/// the affine grid's coordinates. Training only: validation batches get the identity, resized to `size` if given.
/// Followed by a ``RandomResizedCropGPU`` it composes the crop into the same coordinate map (one resample).
public struct AffineCoordTransform: BatchTransform {
    /// `horizontal`: mirror left–right (fastai's `Flip`); `dihedral`: one of the 8 symmetries of the square.
    public enum FlipKind: Sendable { case horizontal, dihedral }

    public let order = 30
    public var flip: (kind: FlipKind, p: Double)?
    /// Angle uniform in ±`maxDegrees`.
    public var rotate: (maxDegrees: Double, p: Double)?
    /// Zoom factor uniform in `min...max`, centred uniformly at random.
    public var zoom: (min: Double, max: Double, p: Double)?
    /// Perspective magnitudes uniform in ±`magnitude`, x and y drawn and masked independently.
    public var warp: (magnitude: Double, p: Double)?
    /// Output size; `nil` keeps the input's.
    public var size: (height: Int, width: Int)?
    public var mode: ResampleMode
    public var padMode: PadMode
    public var alignCorners: Bool

    public init(
        flip: (kind: FlipKind, p: Double)? = nil, rotate: (maxDegrees: Double, p: Double)? = nil,
        zoom: (min: Double, max: Double, p: Double)? = nil, warp: (magnitude: Double, p: Double)? = nil,
        size: (height: Int, width: Int)? = nil, mode: ResampleMode = .bilinear, padMode: PadMode = .reflection,
        alignCorners: Bool = true
    ) {
        require(
            zoom.map { $0.min <= $0.max && $0.min > 0 } ?? true,
            """
            AffineCoordTransform: zoom range \(zoom.map { "\($0.min)...\($0.max)" } ?? "") must be positive and \
            ordered
            """
        )
        require(
            size.map { $0.height > 0 && $0.width > 0 } ?? true, "AffineCoordTransform: size \(size!) must be positive")
        self.flip = flip
        self.rotate = rotate
        self.zoom = zoom
        self.warp = warp
        self.size = size
        self.mode = mode
        self.padMode = padMode
        self.alignCorners = alignCorners
    }

    /// Whether any random component is set.
    var isRandom: Bool { flip != nil || rotate != nil || zoom != nil || warp != nil }

    /// `count` items' draws, in fastai's order: flip, rotation, zoom (factor, centre), warp (x, y).
    func draw(count: Int, generator g: Generator) -> [AffineDraw] {
        func keep(_ p: Double) -> Bool { p >= 1 || g.nextDouble() < p }
        func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * g.nextDouble() }
        return (0..<count).map { _ in
            var d = AffineDraw()
            if let flip {
                let k = flip.kind == .horizontal ? 1 : g.nextInt(in: 0..<8)
                d.dihedral = keep(flip.p) ? k : 0
            }
            if let rotate {
                let a = uniform(-rotate.maxDegrees, rotate.maxDegrees)
                d.angle = keep(rotate.p) ? a : 0
            }
            if let zoom {
                let z = uniform(zoom.min, zoom.max)
                d.zoom = keep(zoom.p) ? z : 1
                d.zoomCol = g.nextDouble()
                d.zoomRow = g.nextDouble()
            }
            if let warp {
                let x = uniform(-warp.magnitude, warp.magnitude)
                d.warpX = keep(warp.p) ? x : 0
                let y = uniform(-warp.magnitude, warp.magnitude)
                d.warpY = keep(warp.p) ? y : 0
            }
            return d
        }
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        FusedAugment(affine: self).apply(batch, generator: generator, training: training)
    }

    public func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)? {
        FusedAugment.fuse(self, following)
    }

    public var description: String {
        var parts: [String] = []
        if let flip { parts.append("\(flip.kind == .horizontal ? "flip" : "dihedral") p=\(flip.p)") }
        if let rotate { parts.append("rotate ±\(rotate.maxDegrees)° p=\(rotate.p)") }
        if let zoom { parts.append("zoom \(zoom.min)...\(zoom.max) p=\(zoom.p)") }
        if let warp { parts.append("warp \(warp.magnitude) p=\(warp.p)") }
        if let size { parts.append("size \(size.height)x\(size.width)") }
        return "AffineCoordTransform(\(parts.joined(separator: ", ")))"
    }
}

/// One item's affine and warp draws (fastai's `dihedral_mat`/`flip_mat`, `rotate_mat`, `zoom_mat`, `_WarpCoord`).
struct AffineDraw: Equatable {
    /// Index into fastai's 8 dihedral matrices; a horizontal flip is 1.
    var dihedral = 0
    /// Degrees.
    var angle = 0.0
    var zoom = 1.0, zoomCol = 0.5, zoomRow = 0.5
    var warpX = 0.0, warpY = 0.0

    var isIdentity: Bool { dihedral == 0 && angle == 0 && zoom == 1 && warpX == 0 && warpY == 0 }

    /// fastai's composed affine matrix flip · rotation · zoom (normalised coordinates, before `_prepare_mat`).
    var matrix: Mat3 {
        let xs = [1.0, -1, 1, -1, -1, 1, 1, -1][dihedral], ys = [1.0, 1, -1, 1, -1, -1, 1, -1][dihedral]
        let m0 = [1.0, 1, 1, 0, 1, 0, 0, 0][dihedral], m1 = [0.0, 0, 0, 1, 0, 1, 1, 1][dihedral]
        let flip = Mat3([xs * m0, xs * m1, 0, ys * m1, ys * m0, 0, 0, 0, 1])
        let t = angle * Double.pi / 180
        let rotation = Mat3([cos(t), sin(t), 0, -sin(t), cos(t), 0, 0, 0, 1])
        let s = 1 / zoom
        let zooming = Mat3([s, 0, (1 - s) * (2 * zoomCol - 1), 0, s, (1 - s) * (2 * zoomRow - 1), 0, 0, 1])
        return flip * rotation * zooming
    }

    /// `_WarpCoord`'s perspective map of the affine grid's coordinates (`find_coeffs(orig_pts, targ_pts)`).
    var warp: Mat3 {
        if warpX == 0 && warpY == 0 { return .identity }
        let x = warpX, y = warpY
        let orig = [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)]
        let targ = [(-1 - y, -1 - x), (-1 + y, 1 + x), (1 + y, -1 + x), (1 - y, 1 - x)]
        return perspectiveCoefficients(from: orig, to: targ)
    }
}

/// A random crop of the batch resized to `size` (fastai's `RandomResizedCropGPU`, order 30): ONE crop per batch,
/// of `minScale...maxScale` of the area and width/height ratio in `ratio` (log-uniform); validation batches get the
/// centre crop of `ratio`'s nearest aspect ratio scaled by `validScale`.
public struct RandomResizedCropGPU: BatchTransform {
    public let order = 30
    public var size: (height: Int, width: Int)
    public var minScale: Double, maxScale: Double
    public var ratio: (min: Double, max: Double)
    public var mode: ResampleMode
    public var validScale: Double

    public init(
        size: (height: Int, width: Int), minScale: Double = 0.08,
        ratio: (min: Double, max: Double) = (3.0 / 4, 4.0 / 3),
        mode: ResampleMode = .bilinear, validScale: Double = 1, maxScale: Double = 1
    ) {
        require(size.height > 0 && size.width > 0, "RandomResizedCropGPU: size \(size) must be positive")
        require(
            0 < minScale && minScale <= maxScale && 0 < ratio.min && ratio.min <= ratio.max,
            """
            RandomResizedCropGPU: needs 0 < minScale (\(minScale)) <= maxScale (\(maxScale)) and 0 < ratio \(ratio) \
            ordered
            """
        )
        self.size = size
        self.minScale = minScale
        self.maxScale = maxScale
        self.ratio = ratio
        self.mode = mode
        self.validScale = validScale
    }

    /// A square `size`×`size` output.
    public init(
        size: Int, minScale: Double = 0.08, ratio: (min: Double, max: Double) = (3.0 / 4, 4.0 / 3),
        mode: ResampleMode = .bilinear, validScale: Double = 1, maxScale: Double = 1
    ) {
        self.init(
            size: (size, size), minScale: minScale, ratio: ratio, mode: mode, validScale: validScale, maxScale: maxScale
        )
    }

    /// The crop of an `h`×`w` batch (fastai's `before_call`: 10 attempts, then the centre crop).
    func box(height h: Int, width w: Int, generator g: Generator, training: Bool) -> CropBox {
        if training {
            for _ in 0..<10 {
                let area = (minScale + (maxScale - minScale) * g.nextDouble()) * Double(w * h)
                let lr = log(ratio.min) + (log(ratio.max) - log(ratio.min)) * g.nextDouble()
                let r = exp(lr)
                let nw = Int((area * r).squareRoot().rounded(.toNearestOrEven))
                let nh = Int((area / r).squareRoot().rounded(.toNearestOrEven))
                if nw <= w && nh <= h {
                    let top = g.nextInt(in: 0..<(h - nh + 1)), left = g.nextInt(in: 0..<(w - nw + 1))
                    return CropBox(top: top, left: left, height: nh, width: nw)
                }
            }
        }
        var (ch, cw) = (h, w)
        let aspect = Double(w) / Double(h)
        if aspect < ratio.min {
            ch = Int(Double(w) / ratio.min)
        } else if aspect > ratio.max {
            cw = Int(Double(h) * ratio.max)
        }
        if !training { (ch, cw) = (Int(Double(ch) * validScale), Int(Double(cw) * validScale)) }
        return CropBox(top: (h - ch) / 2, left: (w - cw) / 2, height: ch, width: cw)
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        FusedAugment(crop: self).apply(batch, generator: generator, training: training)
    }

    public func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)? {
        FusedAugment.fuse(self, following)
    }

    public var description: String { "RandomResizedCropGPU(\(size.height)x\(size.width), minScale \(minScale))" }
}

/// A crop window in pixels.
struct CropBox: Equatable {
    var top: Int, left: Int, height: Int, width: Int
}

/// Random brightness and contrast in logit space (fastai's `Brightness` and `Contrast` composed into one
/// `LightingTfm`, order 40): `sigmoid(c · (logit(x) + logit(b)))` per item, with `b` uniform in `0.5·(1 ± max)`
/// (else 0.5) and `log c` uniform in `±log(1 - max)` (else 1), each kept with probability `p`. Training only.
///
/// Evaluated through a per-item lookup table (see `LightingTable`): within 5e-5 of the exact formula.
public struct Lighting: BatchTransform {
    public let order = 40
    public var brightness: (max: Double, p: Double)?
    public var contrast: (max: Double, p: Double)?

    public init(brightness: (max: Double, p: Double)? = (0.2, 0.75), contrast: (max: Double, p: Double)? = (0.2, 0.75))
    {
        require(
            (brightness.map { 0 <= $0.max && $0.max < 1 } ?? true)
                && (contrast.map { 0 <= $0.max && $0.max < 1 } ?? true),
            "Lighting: max must be in [0, 1)")
        self.brightness = brightness
        self.contrast = contrast
    }

    /// `count` items' (brightness, contrast), brightness first as fastai composes them.
    func draw(count: Int, generator g: Generator) -> [LightingDraw] {
        func keep(_ p: Double) -> Bool { p >= 1 || g.nextDouble() < p }
        return (0..<count).map { _ in
            var d = LightingDraw()
            if let brightness {
                let b = 0.5 * (1 - brightness.max) + brightness.max * g.nextDouble()
                d.brightness = keep(brightness.p) ? b : 0.5
            }
            if let contrast {
                let lo = log(1 - contrast.max)
                let c = exp(lo - 2 * lo * g.nextDouble())
                d.contrast = keep(contrast.p) ? c : 1
            }
            return d
        }
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        FusedAugment(lighting: self).apply(batch, generator: generator, training: training)
    }

    public func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)? {
        FusedAugment.fuse(self, following)
    }

    public var description: String { "Lighting" }
}

/// One item's lighting draw.
struct LightingDraw: Equatable {
    var brightness = 0.5, contrast = 1.0
    var isNeutral: Bool { brightness == 0.5 && contrast == 1 }
}

/// `(x - mean) / std` per channel (fastai's `Normalize`, order 99), on training and validation batches.
public struct Normalize: BatchTransform {
    public let order = 99
    public var mean: [Double], std: [Double]

    public init(mean: [Double], std: [Double]) {
        require(
            mean.count == std.count && !mean.isEmpty && std.allSatisfy { $0 != 0 },
            "Normalize: mean \(mean) and std \(std) must have the same, non-zero length and non-zero std")
        self.mean = mean
        self.std = std
    }

    /// ImageNet's statistics (fastai's `imagenet_stats`).
    public static let imagenet = Normalize(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

    /// Per-channel mean and standard deviation (unbiased, plus 1e-7) of a [B, C, H, W] batch as it reaches
    /// `Normalize` (fastai's `Normalize.setups` on one batch).
    public static func fromBatch(_ x: Tensor) -> Normalize {
        require(x.rank == 4, "Normalize.fromBatch: expects a [B, C, H, W] batch, got \(x.shape)")
        let d = x.to(.float64)
        return Normalize(mean: d.mean(dims: [0, 2, 3]).doubles, std: d.std(dims: [0, 2, 3]).doubles.map { $0 + 1e-7 })
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        FusedAugment(normalize: self).apply(batch, generator: generator, training: training)
    }

    /// `x * std + mean` (fastai's `Normalize.decodes`), for showing a batch.
    public func decode(_ batch: Batch) -> Batch {
        let shape = [1, mean.count, 1, 1]
        let m = Tensor(mean.map { Float($0) }, shape: shape), s = Tensor(std.map { Float($0) }, shape: shape)
        return (batch.x.to(.float32) * s + m, batch.y)
    }

    public var description: String { "Normalize(mean: \(mean), std: \(std))" }
}

/// fastai's `aug_transforms`: a flip (or dihedral), warp, rotation and zoom merged into one ``AffineCoordTransform``,
/// brightness and contrast into one ``Lighting``, and a ``RandomResizedCropGPU`` of square ratio when `minScale` is
/// not 1 (the affine transform then keeps the input size). `mult` scales `maxRotate`, `maxLighting` and `maxWarp`.
public func augTransforms(
    mult: Double = 1, doFlip: Bool = true, flipVert: Bool = false, maxRotate: Double = 10,
    minZoom: Double = 1, maxZoom: Double = 1.1, maxLighting: Double = 0.2, maxWarp: Double = 0.2,
    pAffine: Double = 0.75, pLighting: Double = 0.75, size: Int? = nil,
    mode: ResampleMode = .bilinear, padMode: PadMode = .reflection, alignCorners: Bool = true,
    minScale: Double = 1
) -> [BatchTransform] {
    let rotate = maxRotate * mult, lighting = maxLighting * mult, warp = maxWarp * mult
    var affine = AffineCoordTransform(
        size: minScale == 1 ? size.map { ($0, $0) } : nil, mode: mode, padMode: padMode,
        alignCorners: alignCorners)
    if doFlip { affine.flip = (flipVert ? .dihedral : .horizontal, 0.5) }
    if warp != 0 { affine.warp = (warp, pAffine) }
    if rotate != 0 { affine.rotate = (rotate, pAffine) }
    if minZoom < 1 || maxZoom > 1 { affine.zoom = (minZoom, maxZoom, pAffine) }
    var result: [BatchTransform] = affine.isRandom ? [affine] : []
    if lighting != 0 { result.append(Lighting(brightness: (lighting, pLighting), contrast: (lighting, pLighting))) }
    if minScale != 1 {
        require(size != nil, "augTransforms: minScale \(minScale) needs a size for RandomResizedCropGPU")
        result.append(RandomResizedCropGPU(size: size!, minScale: minScale, ratio: (1, 1)))
    }
    return result
}
