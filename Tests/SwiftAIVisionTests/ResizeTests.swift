import Foundation
import Testing
import SwiftAICore
import SwiftAITestSupport
@testable import SwiftAIVision

/// Pillow / torchvision / fastai 2.8.12 outputs from scripts/make_resize_fixtures.py.
private struct ResizeFixture {
    struct Case: Decodable {
        var name: String
        var op: String
        var input: String
        var width: Int?
        var height: Int?
        var mode: String?
        var pads: [Int]?
        var method: String?
        var padMode: String?
        var pcts: [Double]?
        var draws: [Double]?
        var crop: [Int]?
        var minScale: Double?
        var maxScale: Double?
        var ratio: [Double]?
        var valXtra: Double?
    }

    let cases: [Case]
    let tensors: [String: Tensor]

    static let shared: ResizeFixture = {
        let (tensors, metadata) = try! Safetensors.read(
            path: committedFixture("SwiftAIVisionTests", "resize/resize.safetensors"))
        let cases = try! JSONDecoder().decode([Case].self, from: Data(metadata["cases"]!.utf8))
        return ResizeFixture(cases: cases, tensors: tensors)
    }()

    func image(_ key: String) -> Image {
        let t = tensors[key]!
        return Image(width: t.shape[1], height: t.shape[0], channels: t.shape[2], pixels: t.scalars(as: UInt8.self))
    }

    func cases(_ op: String) -> [Case] { cases.filter { $0.op == op } }

    /// Largest |ours − reference| over the values of a case (Int.max when the sizes differ).
    func maxDiff(_ ours: Image, _ c: Case) -> Int {
        let ref = image("out/" + c.name)
        guard ours.width == ref.width && ours.height == ref.height && ours.channels == ref.channels else { return .max }
        return zip(ours.pixels, ref.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
    }
}

private let padModes: [String: PadMode] = [
    "reflection": .reflection, "zeros": .zeros, "border": .border,
    "reflect": .reflection, "constant": .zeros, "edge": .border
]

@Suite struct ResizeTests {
    private let fixture = ResizeFixture.shared

    @Test func bilinearMatchesPillow() {
        let cases = fixture.cases("bilinear")
        #expect(cases.count == 9)
        for c in cases {
            let out = fixture.image("in/" + c.input).resized(width: c.width!, height: c.height!)
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
        }
    }

    @Test func bilinearMatchesPillowOnALargerImage() {
        let (w, h) = (200, 150)
        var pixels = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 { pixels[(y * w + x) * 3 + c] = UInt8((x * 7 + y * 13 + c * 50 + (x * y) % 31) % 256) }
            }
        }
        let input = Image(width: w, height: h, channels: 3, pixels: pixels)
        let cases = fixture.cases("formula")
        #expect(cases.count == 3)
        for c in cases {
            #expect(fixture.maxDiff(input.resized(width: c.width!, height: c.height!), c) == 0, "\(c.name)")
        }
    }

    @Test func nearestMatchesPillow() {
        for c in fixture.cases("nearest") {
            let out = fixture.image("in/" + c.input).resized(width: c.width!, height: c.height!, resampling: .nearest)
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
        }
    }

    @Test func padMatchesTorchvision() {
        let cases = fixture.cases("pad")
        #expect(cases.count == 6)
        for c in cases {
            let p = c.pads!
            let out = fixture.image("in/" + c.input).padded(
                left: p[0], top: p[1], right: p[2], bottom: p[3], mode: padModes[c.mode!]!)
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
        }
    }

    @Test func resizeMatchesFastaiWithPinnedPositions() {
        let cases = fixture.cases("fastai_resize")
        #expect(cases.count == 39)
        let methods: [String: ResizeMethod] = ["crop": .crop, "pad": .pad, "squish": .squish]
        for c in cases {
            let tfm = Resize(
                height: c.height!, width: c.width!, method: methods[c.method!]!, padMode: padModes[c.padMode!]!)
            let input = fixture.image("in/" + c.input)
            let out = tfm.apply(input, pcts: (c.pcts![0], c.pcts![1]))
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
            if c.pcts! == [0.5, 0.5] {
                #expect(tfm.apply(input, generator: Generator(seed: 1), training: false) == out, "\(c.name) validation")
            }
        }
    }

    @Test func randomResizedCropMatchesFastaiWithScriptedDraws() {
        let cases = fixture.cases("rrc_train")
        #expect(cases.count == 5)
        for c in cases {
            let tfm = RandomResizedCrop(
                height: c.height!, width: c.width!, minScale: c.minScale!,
                ratio: (c.ratio![0], c.ratio![1]), maxScale: c.maxScale!)
            let input = fixture.image("in/" + c.input)
            var draws = c.draws![...]
            let window = tfm.trainingWindow(
                width: input.width, height: input.height,
                uniform: { a, b in a + (b - a) * draws.popFirst()! },
                randint: { a, b in a + Int(draws.popFirst()! * Double(b - a + 1)) })
            #expect(draws.isEmpty, "\(c.name): draws left over")
            #expect([window.x, window.y, window.width, window.height] == c.crop!, "\(c.name)")
            let out = input.cropPadResized(window, padMode: .zeros, toWidth: c.width!, toHeight: c.height!)
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
        }
    }

    @Test func randomResizedCropValidationMatchesFastai() {
        for c in fixture.cases("rrc_valid") {
            let tfm = RandomResizedCrop(height: c.height!, width: c.width!, valXtra: c.valXtra!)
            let out = tfm.apply(fixture.image("in/" + c.input), generator: Generator(seed: 0), training: false)
            #expect(fixture.maxDiff(out, c) == 0, "\(c.name)")
        }
    }

    @Test func resizeWindowArithmetic() {
        // 37×23 → 16×16 crop: m = 23/16, window 23×23 at int(0.3·14) = 4; pad: m = 37/16, window 37×37 at int(0.8·−14).
        #expect(
            Resize(16).window(width: 37, height: 23, pcts: (0.3, 0.8)) == CropWindow(x: 4, y: 0, width: 23, height: 23))
        #expect(
            Resize(16, method: .pad).window(width: 37, height: 23, pcts: (0.3, 0.8))
                == CropWindow(x: 0, y: -11, width: 37, height: 37))
        // fastai's size tuple is (height, width): a 20-high, 12-wide output keeps that orientation.
        let out = Resize(height: 20, width: 12).apply(
            Image(width: 50, height: 80, channels: 3), generator: Generator(seed: 0), training: true)
        #expect(out.width == 12 && out.height == 20)
    }

    @Test func neededSourceSizeKeepsTheOutputResolution() {
        // 2000×1500 → 460 crop: the crop is the 1500-side square, so 460/1500 of the image suffices.
        #expect(Resize(460).neededSourceSize(width: 2000, height: 1500) == (614, 460))
        #expect(Resize(460, method: .pad).neededSourceSize(width: 2000, height: 1500) == (460, 345))
        #expect(Resize(460, method: .squish).neededSourceSize(width: 2000, height: 1500) == (614, 460))
        #expect(Resize(460).neededSourceSize(width: 300, height: 200) == (300, 200))
        for (w, h) in [(2000, 1500), (640, 480), (1000, 3000)] {
            let (sw, sh) = Resize(224).neededSourceSize(width: w, height: h)
            let win = Resize(224).window(width: sw, height: sh, pcts: (0.5, 0.5))
            #expect(win.width >= 224 && win.height >= 224)
            let rrc = RandomResizedCrop(224)
            let (rw, rh) = rrc.neededSourceSize(width: w, height: h)
            guard (rw, rh) != (w, h) else { continue }
            let area = rrc.minScale * Double(rw * rh)
            #expect((area * rrc.ratio.0).squareRoot() >= 223.5 && (area / rrc.ratio.1).squareRoot() >= 223.5)
            #expect(rw >= 224 + rrc.validationExtra || rh >= 224 + rrc.validationExtra)
        }
    }

    @Test func resizePositionsAreUniformInTraining() {
        let tfm = Resize(100), g = Generator(seed: 3)
        var bins = [Int](repeating: 0, count: 10)
        for _ in 0..<20_000 {
            let p = tfm.pcts(generator: g, training: true)
            let win = tfm.window(width: 1100, height: 100, pcts: p)
            #expect(win.y == 0 && win.width == 100)
            bins[win.x / 100] += 1
        }
        #expect(bins.allSatisfy { abs($0 - 2000) < 200 }, "\(bins)")
        #expect(tfm.pcts(generator: g, training: false) == (0.5, 0.5))
    }

    @Test func randomResizedCropDrawsAreUniformInAreaAndLogRatio() {
        let tfm = RandomResizedCrop(224), g = Generator(seed: 4)
        let side = 4000, n = 20_000
        var areaBins = [Int](repeating: 0, count: 8), ratioBins = [Int](repeating: 0, count: 8), kept = 0
        for _ in 0..<n {
            let win = tfm.trainingWindow(
                width: side, height: side, uniform: { a, b in a + (b - a) * g.nextDouble() },
                randint: { a, b in a + g.nextInt(in: 0..<(b - a + 1)) })
            #expect(win.x >= 0 && win.y >= 0 && win.x + win.width <= side && win.y + win.height <= side)
            let area = Double(win.width * win.height) / Double(side * side)
            // Below 3/4 of the area every ratio fits, so accepted draws there keep the uniform densities.
            guard area < 0.74 else { continue }
            kept += 1
            areaBins[min(Int((area - 0.08) / 0.66 * 8), 7)] += 1
            let logRatio = log(Double(win.width) / Double(win.height))
            ratioBins[min(max(Int((logRatio - log(0.75)) / (log(4.0 / 3) - log(0.75)) * 8), 0), 7)] += 1
        }
        #expect(kept > n / 2)
        let expected = Double(kept) / 8
        #expect(areaBins.allSatisfy { abs(Double($0) - expected) < 0.08 * expected }, "\(areaBins)")
        #expect(ratioBins.allSatisfy { abs(Double($0) - expected) < 0.08 * expected }, "\(ratioBins)")
    }

    @Test func cropAndPadEdgeCases() {
        let img = Image(width: 3, height: 1, channels: 1, pixels: [1, 2, 3])
        #expect(
            img.padded(left: 5, top: 0, right: 4, bottom: 0, mode: .reflection).pixels == [
                2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3
            ])
        #expect(
            img.padded(left: 1, top: 1, right: 1, bottom: 0, mode: .border).pixels == [1, 1, 2, 3, 3, 1, 1, 2, 3, 3])
        #expect(
            img.padded(left: 0, top: 0, right: 0, bottom: 2, mode: .reflection).pixels == [1, 2, 3, 1, 2, 3, 1, 2, 3])
        #expect(img.cropped(x: 1, y: 0, width: 2, height: 1).pixels == [2, 3])
        #expect(img.resized(width: 3, height: 1) == img)
    }
}
