import SwiftAICore
import SwiftAIData

/// A run of IntToFloat → AffineCoordTransform → RandomResizedCropGPU → Lighting → Normalize (each optional, in this
/// order) done in one pass per item. Draws happen in the order the transforms would draw one by one (per-item
/// geometry, the batch's crop, per-item lighting), so the fused result equals applying them one after another —
/// except that an affine transform followed by a crop is always resampled once through the composed map (fastai
/// resamples twice: the affine at the input size, then the crop).
struct FusedAugment: BatchTransform {
    var intToFloat: IntToFloat?
    var affine: AffineCoordTransform?
    var crop: RandomResizedCropGPU?
    var lighting: Lighting?
    var normalize: Normalize?

    init(
        intToFloat: IntToFloat? = nil, affine: AffineCoordTransform? = nil, crop: RandomResizedCropGPU? = nil,
        lighting: Lighting? = nil, normalize: Normalize? = nil
    ) {
        self.intToFloat = intToFloat
        self.affine = affine
        self.crop = crop
        self.lighting = lighting
        self.normalize = normalize
    }

    /// `first` with as many of `following` as fit the stage order; `nil` when none does.
    static func fuse(_ first: BatchTransform, _ following: ArraySlice<BatchTransform>) -> (
        transform: BatchTransform, consumed: Int
    )? {
        var f = FusedAugment()
        guard f.absorb(first) else { return nil }
        var consumed = 0
        for t in following {
            guard f.absorb(t) else { break }
            consumed += 1
        }
        return consumed > 0 ? (f, consumed) : nil
    }

    /// The highest stage filled so far (0 none, then IntToFloat 1 … Normalize 5).
    private var stage: Int {
        normalize != nil ? 5 : lighting != nil ? 4 : crop != nil ? 3 : affine != nil ? 2 : intToFloat != nil ? 1 : 0
    }

    /// Takes `t` when it is a later stage than everything taken so far.
    private mutating func absorb(_ t: BatchTransform) -> Bool {
        let s = stage
        switch t {
        case let t as IntToFloat where s < 1: intToFloat = t
        case let t as AffineCoordTransform where s < 2: affine = t
        case let t as RandomResizedCropGPU where s < 3: crop = t
        case let t as Lighting where s < 4: lighting = t
        case let t as Normalize where s < 5: normalize = t
        default: return false
        }
        return true
    }

    var order: Int { intToFloat?.order ?? affine?.order ?? crop?.order ?? lighting?.order ?? normalize?.order ?? 0 }

    var description: String {
        let parts: [BatchTransform?] = [intToFloat, affine, crop, lighting, normalize]
        return parts.compactMap { $0?.description }.joined(separator: " + ")
    }

    func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        let x = batch.x
        require(x.rank == 4, "\(description): expects a [B, C, H, W] batch, got shape \(x.shape)")
        require(
            x.dtype == .float32 || (intToFloat != nil && x.dtype == .uint8),
            """
            \(description): expects a float32 \
            batch\(intToFloat == nil ? " (put IntToFloat first for uint8)" : " or uint8"), got \(x.dtype)
            """
        )
        let draws = training ? affine?.draw(count: x.shape[0], generator: generator) : nil
        let y1 = affine?.size ?? (x.shape[2], x.shape[3])
        let box = crop?.box(height: y1.height, width: y1.width, generator: generator, training: training)
        let lights = training ? lighting?.draw(count: x.shape[0], generator: generator) : nil
        return (run(x, draws: draws, crop: box, lighting: lights), batch.y)
    }

    /// The pass with given draws: `draws` per item (`nil`: identity), the batch's `crop` box of the affine output,
    /// `lighting` per item (`nil`: none).
    func run(_ x: Tensor, draws: [AffineDraw]?, crop box: CropBox?, lighting lights: [LightingDraw]?) -> Tensor {
        let b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let out = crop?.size ?? affine?.size ?? (h, w)
        var normScale = [Float](repeating: 1, count: c), normShift = [Float](repeating: 0, count: c)
        if let normalize {
            require(
                normalize.mean.count == c || normalize.mean.count == 1,
                "Normalize: \(normalize.mean.count) channel statistics for a batch of \(c) channels (shape \(x.shape))")
            for ch in 0..<c {
                let k = normalize.mean.count == 1 ? 0 : ch
                normScale[ch] = Float(1 / normalize.std[k])
                normShift[ch] = Float(-normalize.mean[k] / normalize.std[k])
            }
        }
        let settings = PassSettings(
            height: out.height, width: out.width, mode: affine?.mode ?? crop?.mode ?? .bilinear,
            padMode: affine?.padMode ?? .reflection, alignCorners: affine?.alignCorners ?? true,
            scale: Float(1 / (intToFloat?.div ?? 1)), normScale: normScale, normShift: normShift)
        let items = (0..<b).map { i in
            var pass = itemPass(draws?[i] ?? AffineDraw(), crop: box, source: (h, w), settings: settings)
            if let l = lights?[i], !l.isNeutral { pass.lighting = l }
            return pass
        }
        return runPasses(x, items, settings)
    }

    /// One item's coordinate map, sampled region and area step.
    ///
    /// Without a crop: output pixel → normalised output grid → fastai's matrix (aspect-fixed by `_prepare_mat`) →
    /// warp → source pixel; the area step follows `_grid_sample` (pool by `d` of ``areaFactor`` when `d > 1` and
    /// `d > 2/(coordinate span)`), per item. With a crop: output pixel → crop pixel of the affine output (the crop's
    /// align_corners grid) → its normalised grid → matrix → warp → source; the area step follows fastai's crop pass
    /// (`d` from the crop size, zoom 1). When the item's geometry is the identity and the affine keeps the input size,
    /// the crop box itself is the sampled region, exactly as fastai's crop pass samples it.
    func itemPass(_ d: AffineDraw, crop box: CropBox?, source: (height: Int, width: Int), settings s: PassSettings)
        -> ItemPass
    {
        let (h, w) = source
        let align = affine?.alignCorners ?? true
        var matrix = d.matrix
        matrix.m[1] *= Double(h) / Double(w)  // _prepare_mat
        matrix.m[3] *= Double(w) / Double(h)
        let geometry = d.warp * matrix
        var region = (top: 0, left: 0, height: h, width: w)
        var sourceAlign = align
        let toNormalised: Mat3
        var zoomLimit = 1.0
        let d2: Double
        if let box {
            let y1 = affine?.size ?? source
            d2 = areaFactor(height: box.height, width: box.width, outputWidth: s.width)
            if d.isIdentity && y1 == source {
                region = (box.top, box.left, box.height, box.width)
                sourceAlign = true
                toNormalised = normalisingMap(width: s.width, height: s.height, alignCorners: true)
            } else {
                let sx = s.width > 1 ? Double(box.width - 1) / Double(s.width - 1) : 0
                let sy = s.height > 1 ? Double(box.height - 1) / Double(s.height - 1) : 0
                let cropPixel = Mat3.scaleShift(
                    sx: sx, tx: Double(box.left) + (s.width > 1 ? 0 : Double(box.width - 1) / 2),
                    sy: sy, ty: Double(box.top) + (s.height > 1 ? 0 : Double(box.height - 1) / 2))
                toNormalised =
                    geometry * normalisingMap(width: y1.width, height: y1.height, alignCorners: align) * cropPixel
            }
        } else {
            d2 = areaFactor(height: h, width: w, outputWidth: s.width)
            toNormalised = geometry * normalisingMap(width: s.width, height: s.height, alignCorners: align)
            let corners = [
                (0.0, 0.0), (Double(s.width - 1), 0), (0, Double(s.height - 1)),
                (Double(s.width - 1), Double(s.height - 1))
            ]
            .map { toNormalised.apply($0.0, $0.1) }
            let values = corners.flatMap { [$0.x, $0.y] }
            zoomLimit = 2 / (values.max()! - values.min()!)
        }
        var pooled: (height: Int, width: Int)?
        if s.mode == .bilinear && d2 > 1 && d2 > zoomLimit {
            let f = 1 / d2  // F.interpolate(scale_factor=1/d, recompute_scale_factor=True): floor(size · f)
            pooled = (Int((Double(region.height) * f).rounded(.down)), Int((Double(region.width) * f).rounded(.down)))
        }
        let sampled = pooled ?? (region.height, region.width)
        let map =
            unnormalisingMap(width: sampled.width, height: sampled.height, alignCorners: sourceAlign) * toNormalised
        let direct = pooled == nil && sampled == (s.height, s.width) && map.isIdentity(tolerance: 1e-9)
        return ItemPass(map: direct ? nil : map, region: region, pooled: pooled, lighting: nil)
    }

    /// `_grid_sample`'s reduction `d`: `min(x.shape[-2]/coords.shape[-2], x.shape[-1]/coords.shape[-1])/2` with
    /// `coords` of shape [B, h, w, 2], so `min(H/w, W/2)/2` — fastai compares the height with the output width
    /// and the width with 2; reproduced as is (for square outputs from inputs wider than 4 pixels it is `H/(2w)`).
    func areaFactor(height: Int, width: Int, outputWidth: Int) -> Double {
        Swift.min(Double(height) / Double(outputWidth), Double(width) / 2) / 2
    }
}
