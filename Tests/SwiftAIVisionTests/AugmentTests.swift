import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAITestSupport
@testable import SwiftAIVision

/// fastai 2.8.12's batch augmentations on small batches (scripts/make_augment_fixtures.py).
private let fixture: (tensors: [String: Tensor], metadata: [String: String]) = {
    try! Safetensors.read(path: committedFixture("SwiftAIVisionTests", "augment/augment.safetensors"))
}()

private func settings(_ name: String) -> [String: String] {
    Dictionary(
        uniqueKeysWithValues: fixture.metadata[name]!.split(separator: ";").map {
            let kv = $0.split(separator: "=", maxSplits: 1)
            return (String(kv[0]), String(kv[1]))
        })
}

private func draws(_ name: String) -> [AffineDraw] {
    let d = fixture.tensors[name + ".draws"]!
    return (0..<d.shape[0]).map { i in
        AffineDraw(
            dihedral: Int(d[element: [i, 0]]), angle: d[element: [i, 1]], zoom: d[element: [i, 2]],
            zoomCol: d[element: [i, 3]], zoomRow: d[element: [i, 4]], warpX: d[element: [i, 5]],
            warpY: d[element: [i, 6]])
    }
}

private func cropBox(_ s: [String: String]) -> CropBox {
    let v = s["crop"]!.split(separator: ",").map { Int($0)! }
    return CropBox(top: v[0], left: v[1], height: v[2], width: v[3])
}

/// Largest |a − b|.
private func maxDiff(_ a: Tensor, _ b: Tensor) -> Double {
    #expect(a.shape == b.shape)
    return zip(a.doubles, b.doubles).map { abs($0 - $1) }.max() ?? 0
}

private let randomAffine = AffineCoordTransform(
    flip: (.horizontal, 0.5), rotate: (10, 0.75), zoom: (1, 1.1, 0.75), warp: (0.2, 0.75))

@Suite struct AugmentTests {
    /// The fused pass on the uint8 batch (channels-last as collated, and row-major) against fastai's
    /// AffineCoordTfm on x/255: every padding mode, align_corners both ways, warp, dihedral, upscale, nearest.
    @Test(arguments: [
        "affine", "warp_reflection_1", "warp_reflection_0", "warp_zeros_1", "warp_zeros_0", "warp_border_1",
        "warp_border_0", "dihedral", "upscale", "upscale_zeros_0", "nearest", "area", "valid_area", "valid_same"
    ])
    func affineMatchesFastai(_ name: String) {
        let s = settings(name)
        let pad: PadMode = s["pad"] == "zeros" ? .zeros : s["pad"] == "border" ? .border : .reflection
        let affine = AffineCoordTransform(
            size: (Int(s["h"]!)!, Int(s["w"]!)!),
            mode: s["mode"] == "nearest" ? .nearest : .bilinear, padMode: pad,
            alignCorners: s["align"] == "1")
        let fused = FusedAugment(intToFloat: IntToFloat(), affine: affine)
        let x = fixture.tensors[s["src"]!]!
        let pinned = s["train"] == "1" ? draws(name) : nil
        for input in [x.contiguous(.channelsLast), x] {
            let out = fused.run(input, draws: pinned, crop: nil, lighting: nil)
            #expect(out.isChannelsLast)
            let diff = maxDiff(out, fixture.tensors[name + ".out"]!)
            #expect(diff < 1e-4, "\(name): max |diff| \(diff)")
        }
    }

    /// RandomResizedCropGPU's crop pass (training, validation centre crop at validScale 0.9, area step) for
    /// fastai's crop boxes.
    @Test(arguments: ["crop", "crop_valid", "crop_area"])
    func cropMatchesFastai(_ name: String) {
        let s = settings(name)
        let crop = RandomResizedCropGPU(size: (Int(s["h"]!)!, Int(s["w"]!)!), minScale: 0.35, validScale: 0.9)
        let out = FusedAugment(intToFloat: IntToFloat(), crop: crop)
            .run(fixture.tensors[s["src"]!]!.contiguous(.channelsLast), draws: nil, crop: cropBox(s), lighting: nil)
        let diff = maxDiff(out, fixture.tensors[name + ".out"]!)
        #expect(diff < 1e-4, "\(name): max |diff| \(diff)")
    }

    /// The validation crop box equals fastai's (centre, ratio-limited, scaled by validScale and truncated).
    @Test func validationCropBox() {
        let crop = RandomResizedCropGPU(size: 11, minScale: 0.35, validScale: 0.9)
        #expect(
            crop.box(height: 20, width: 17, generator: Generator(seed: 0), training: false)
                == cropBox(settings("crop_valid")))
        let square = RandomResizedCropGPU(size: 224, minScale: 0.75, ratio: (1, 1))
        #expect(
            square.box(height: 300, width: 400, generator: Generator(seed: 0), training: false)
                == CropBox(top: 0, left: 50, height: 300, width: 300))
    }

    /// Affine + warp + crop in one map against torch evaluating the same composition (crop grid → affine output's
    /// normalised frame → fastai's matrix → warp → grid_sample).
    @Test func composedCropMatchesTorch() {
        let s = settings("composed")
        let affine = AffineCoordTransform(flip: (.horizontal, 1))
        let crop = RandomResizedCropGPU(size: (Int(s["h"]!)!, Int(s["w"]!)!))
        let out = FusedAugment(intToFloat: IntToFloat(), affine: affine, crop: crop)
            .run(
                fixture.tensors["x"]!.contiguous(.channelsLast), draws: draws("composed"), crop: cropBox(s),
                lighting: nil)
        let diff = maxDiff(out, fixture.tensors["composed.out"]!)
        #expect(diff < 1e-4, "composed: max |diff| \(diff)")
    }

    /// Brightness then contrast in logit space through the lookup table, against fastai's float formula (inputs
    /// include exact 0 and 1).
    @Test func lightingMatchesFastai() {
        let l = fixture.tensors["lighting.lighting"]!
        let pinned = (0..<2).map { LightingDraw(brightness: l[element: [$0, 0]], contrast: l[element: [$0, 1]]) }
        let out = FusedAugment(lighting: Lighting()).run(
            fixture.tensors["xl"]!, draws: nil, crop: nil, lighting: pinned)
        let diff = maxDiff(out, fixture.tensors["lighting.out"]!)
        #expect(diff < 5e-5, "lighting: max |diff| \(diff)")
    }

    /// The table's worst case over a dense grid of inputs at the extreme draws of maxLighting 0.2.
    @Test func lightingTableAccuracy() {
        var worst: Float = 0
        for (b, c) in [(0.4, 0.8), (0.4, 1.25), (0.6, 0.8), (0.6, 1.25), (0.5, 1.0)] {
            let t = LightingTable(brightness: b, contrast: c)
            defer { t.deallocate() }
            for k in 0...100_000 {
                let v = Float(k) / 100_000
                let x = min(max(Double(v), 1e-7), 1 - 1e-7)
                let exact = 1 / (1 + exp(-c * (log(x / (1 - x)) + log(b / (1 - b)))))
                worst = max(worst, abs(t.lookup(v) - Float(exact)))
            }
        }
        #expect(worst < 5e-5, "lighting table: max |error| \(worst)")
    }

    @Test func normalizeMatchesFastai() {
        let out = Normalize.imagenet.apply(
            (fixture.tensors["xl"]!, Tensor([0])), generator: Generator(), training: false
        ).x
        #expect(maxDiff(out, fixture.tensors["normalize.out"]!) < 1e-6)
        let stats = Normalize.fromBatch(fixture.tensors["xl"]!)
        let y = stats.apply((fixture.tensors["xl"]!, Tensor([0])), generator: Generator(), training: true).x
        for m in y.mean(dims: [0, 2, 3]).doubles { #expect(abs(m) < 1e-6) }
        for v in y.std(dims: [0, 2, 3]).doubles { #expect(abs(v - 1) < 1e-5) }
    }

    /// The pipeline fuses IntToFloat, the affine transform with its crop, Lighting and Normalize into one step whose
    /// output equals running them one by one (float batch in between), on training and validation batches.
    @Test func fusedEqualsOneByOne() {
        let x = fixture.tensors["xbig"]!.contiguous(.channelsLast)
        for tfms in [
            augTransforms(size: 24, minScale: 0.75), augTransforms(size: 24),
            augTransforms(maxWarp: 0, size: 17, padMode: .zeros)
        ] {
            let pipeline = BatchPipeline([Normalize.imagenet, IntToFloat()] + tfms)
            #expect(pipeline.steps.count == 1, "\(pipeline.steps)")
            for training in [true, false] {
                let fused = pipeline.apply((x, Tensor([0, 1])), generator: Generator(seed: 5), training: training).x
                let g = Generator(seed: 5)
                var y = IntToFloat().apply((x, Tensor([0, 1])), generator: g, training: training)
                let geometry = tfms.first { $0 is AffineCoordTransform }!
                let crop = tfms.first { $0 is RandomResizedCropGPU }
                y = (crop.map { geometry.fused(with: [$0])!.transform } ?? geometry).apply(
                    y, generator: g, training: training)
                y = Lighting().apply(y, generator: g, training: training)
                y = Normalize.imagenet.apply(y, generator: g, training: training)
                #expect(fused.shape == [2, 3, 24, 24] || fused.shape == [2, 3, 17, 17])
                #expect(maxDiff(fused, y.x) < 1e-5)
            }
        }
    }

    /// Validation batches are deterministic: no random draw, only resize/centre crop and normalisation.
    @Test func validationIsDeterministic() {
        let x = fixture.tensors["xbig"]!.contiguous(.channelsLast)
        let pipeline = BatchPipeline([IntToFloat(), Normalize.imagenet] + augTransforms(size: 20, minScale: 0.5))
        let a = pipeline.apply((x, Tensor([0, 1])), generator: Generator(seed: 1), training: false).x
        let b = pipeline.apply((x, Tensor([0, 1])), generator: Generator(seed: 2), training: false).x
        #expect(a.floats == b.floats)
        let t = pipeline.apply((x, Tensor([0, 1])), generator: Generator(seed: 1), training: true).x
        #expect(t.floats != a.floats)
        // Validation = the centre crop resized, normalised.
        let crop = FusedAugment(intToFloat: IntToFloat(), crop: RandomResizedCropGPU(size: 20), normalize: .imagenet)
            .run(x, draws: nil, crop: CropBox(top: 3, left: 0, height: 53, width: 53), lighting: nil)
        #expect(maxDiff(a, crop) < 1e-6)
    }

    /// fastai's composition: flip, warp, rotate and zoom in one affine transform (size only without a crop),
    /// brightness and contrast in one Lighting, the crop last.
    @Test func augTransformsComposesAsFastai() {
        let t = augTransforms(size: 224, minScale: 0.75)
        #expect(t.count == 3)
        let a = t[0] as! AffineCoordTransform
        #expect(a.flip?.kind == .horizontal && a.flip?.p == 0.5 && a.rotate?.maxDegrees == 10 && a.rotate?.p == 0.75)
        #expect(a.zoom?.max == 1.1 && a.warp?.magnitude == 0.2 && a.size == nil && a.alignCorners)
        #expect((t[1] as! Lighting).brightness?.max == 0.2)
        let c = t[2] as! RandomResizedCropGPU
        #expect(c.size == (224, 224) && c.minScale == 0.75 && c.ratio == (1, 1))
        let plain = augTransforms(mult: 2, flipVert: true, maxZoom: 1, maxLighting: 0, size: 128)
        #expect(plain.count == 1)
        let p = plain[0] as! AffineCoordTransform
        #expect(p.flip?.kind == .dihedral && p.zoom == nil && p.rotate?.maxDegrees == 20 && p.warp?.magnitude == 0.4)
        #expect(p.size! == (128, 128))
        #expect(augTransforms(doFlip: false, maxRotate: 0, maxZoom: 1, maxLighting: 0, maxWarp: 0).isEmpty)
    }

    /// Draw distributions over 20 000 items: flip 0.5; rotation, zoom and each warp axis kept with pAffine,
    /// uniform over their ranges; lighting kept with pLighting in fastai's ranges.
    @Test func drawStatistics() {
        let n = 20_000
        let d = randomAffine.draw(count: n, generator: Generator(seed: 11))
        func frac(_ f: (AffineDraw) -> Bool) -> Double { Double(d.filter(f).count) / Double(n) }
        #expect(abs(frac { $0.dihedral == 1 } - 0.5) < 0.015)
        #expect(abs(frac { $0.angle != 0 } - 0.75) < 0.015)
        #expect(abs(frac { $0.zoom != 1 } - 0.75) < 0.015)
        #expect(abs(frac { $0.warpX != 0 } - 0.75) < 0.015 && abs(frac { $0.warpY != 0 } - 0.75) < 0.015)
        #expect(abs(frac { $0.warpX != 0 && $0.warpY != 0 } - 0.5625) < 0.015)  // independent masks
        let angles = d.map(\.angle).filter { $0 != 0 }
        let mean = angles.reduce(0, +) / Double(angles.count)
        let variance = angles.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(angles.count)
        #expect(abs(mean) < 0.15 && abs(variance - 100.0 / 3) < 1.5 && angles.allSatisfy { abs($0) <= 10 })
        let zooms = d.map(\.zoom).filter { $0 != 1 }
        #expect(
            zooms.allSatisfy { $0 >= 1 && $0 <= 1.1 } && abs(zooms.reduce(0, +) / Double(zooms.count) - 1.05) < 0.002)
        #expect(d.allSatisfy { abs($0.warpX) <= 0.2 && abs($0.warpY) <= 0.2 && (0..<1).contains($0.zoomCol) })
        let dihedral = AffineCoordTransform(flip: (.dihedral, 0.5)).draw(count: n, generator: Generator(seed: 3))
        #expect(abs(Double(dihedral.filter { $0.dihedral == 0 }.count) / Double(n) - (0.5 + 0.5 / 8)) < 0.015)
        let l = Lighting().draw(count: n, generator: Generator(seed: 4))
        let b = l.map(\.brightness).filter { $0 != 0.5 }, c = l.map(\.contrast).filter { $0 != 1 }
        #expect(abs(Double(b.count) / Double(n) - 0.75) < 0.015 && abs(Double(c.count) / Double(n) - 0.75) < 0.015)
        #expect(b.allSatisfy { $0 >= 0.4 && $0 <= 0.6 } && c.allSatisfy { $0 >= 0.8 && $0 <= 1.25 })
        let logC = c.map { log($0) }
        #expect(abs(logC.reduce(0, +) / Double(logC.count)) < 0.003)  // log-uniform, symmetric
    }

    /// Training crops: area fraction within [minScale, 1], square for ratio (1, 1), inside the image.
    @Test func cropDraws() {
        let crop = RandomResizedCropGPU(size: 224, minScale: 0.35, ratio: (1, 1))
        let g = Generator(seed: 9)
        for _ in 0..<2_000 {
            let b = crop.box(height: 300, width: 400, generator: g, training: true)
            #expect(b.top >= 0 && b.left >= 0 && b.top + b.height <= 300 && b.left + b.width <= 400)
            #expect(b.height == b.width && Double(b.height * b.width) >= 0.35 * 120_000 - 700)
        }
    }
}

/// Milliseconds per batch of 64 460×460 uint8 images → 224×224 normalised float, fused pipeline
/// (`SWIFTAI_AUGMENT_BENCH=1 swift test -c release --filter AugmentBenchmark`).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SWIFTAI_AUGMENT_BENCH"] != nil))
struct AugmentBenchmark {
    @Test func fusedBatch() {
        let x = Tensor.randint(0, 256, [64, 460, 460, 3], dtype: .uint8, generator: Generator(seed: 1)).permute([
            0, 3, 1, 2
        ])
        for (name, tfms) in [
            ("presizing minScale 0.75", augTransforms(size: 224, minScale: 0.75)),
            ("size 224", augTransforms(size: 224))
        ] {
            let pipeline = BatchPipeline([IntToFloat(), Normalize.imagenet] + tfms)
            for threads in [1, 2] {
                Parallel.threadCount = threads
                for training in [true, false] {
                    var times: [Double] = []
                    for k in 0..<6 {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        _ = pipeline.apply((x, Tensor([0])), generator: Generator(seed: UInt64(k)), training: training)
                        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                    }
                    let median = times.dropFirst().sorted()[2]
                    print(
                        """
                        augment \(name) threads \(threads) \(training ? "train" : "valid"): \
                        \(String(format: "%.1f", median)) ms/batch, \
                        \(String(format: "%.3f", median / 64 * Double(threads))) core-ms/image
                        """
                    )
                }
            }
        }
        Parallel.threadCount = 2
    }
}

/// Lesson 18's batch augmentations (SwiftAIData): per-item crop offsets and flips, erased and copied patches.
@Suite struct BatchAugmentTests {
    let x: Tensor = {
        let values: [Float] = (0..<240).map { k in Float(k % 97) / 97 + 0.01 }
        return Tensor(values, shape: [4, 2, 6, 5])
    }()

    @Test func randomCropShiftsEachItemWithZeroPadding() {
        let y = RandomCrop(padding: 1).apply((x, Tensor([0])), generator: Generator(seed: 3), training: true).x
        var shifts = Set<[Int]>()
        func matches(_ b: Int, _ dy: Int, _ dx: Int) -> Bool {
            for c in 0..<2 {
                for i in 0..<6 {
                    for j in 0..<5 {
                        let si = i + dy, sj = j + dx
                        let inside = si >= 0 && si < 6 && sj >= 0 && sj < 5
                        if y[element: [b, c, i, j]] != (inside ? x[element: [b, c, si, sj]] : 0) { return false }
                    }
                }
            }
            return true
        }
        let offsets: [[Int]] = (-1...1).flatMap { dy in (-1...1).map { dx in [dy, dx] } }
        for b in 0..<4 {
            let match = offsets.first { matches(b, $0[0], $0[1]) }
            #expect(match != nil)
            if let match { shifts.insert(match) }
        }
        #expect(shifts.count > 1)  // items draw their own offsets
        #expect(RandomCrop().apply((x, Tensor([0])), generator: Generator(), training: false).x.floats == x.floats)
    }

    @Test func randomFlipMirrorsAboutHalfTheItems() {
        let big = Tensor.rand([2_000, 1, 2, 3], generator: Generator(seed: 1)).contiguous(.channelsLast)
        let y = RandomFlip().apply((big, Tensor([0])), generator: Generator(seed: 2), training: true).x
        let flipped = big.flip(dim: 3)
        var count = 0
        for b in 0..<2_000 {
            let item = y[b].floats
            if item == flipped[b].floats { count += 1 } else { #expect(item == big[b].floats) }
        }
        #expect(abs(Double(count) / 2_000 - 0.5) < 0.04)
    }

    @Test func randEraseFillsPatchesWithinTheBatchRange() {
        let y = RandErase(pct: 0.4, maxNum: 2).apply((x, Tensor([0])), generator: Generator(seed: 7), training: true).x
        let lo = x.min().item(), hi = x.max().item()
        let changed = zip(x.floats, y.floats).filter { $0 != $1 }.map(\.1)
        #expect(!changed.isEmpty && changed.allSatisfy { Double($0) >= lo - 1e-6 && Double($0) <= hi + 1e-6 })
        // whole 2×2 patches over both channels (a draw may land on its own value)
        #expect(changed.count % (2 * 2 * 2) == 0)
    }

    @Test func randCopyCopiesPatchesOfTheSameItem() {
        let y = RandCopy(pct: 0.4, maxNum: 3).apply((x, Tensor([0])), generator: Generator(seed: 5), training: true).x
        #expect(y.floats != x.floats)
        for b in 0..<4 {  // every value of an item comes from the same item
            let own = Set(x[b].floats)
            #expect(y[b].floats.allSatisfy { own.contains($0) })
        }
    }
}
