import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAIVision

/// JSON text of a description, keys sorted, for comparisons.
private func text(_ d: [String: Any]) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), as: UTF8.self)
}

@Suite struct TransformCodingTests {
    @Test func everyKnownTransformRoundTrips() throws {
        let items: [ItemTransform] = [
            Resize(height: 30, width: 40, method: .pad, padMode: .border),
            RandomResizedCrop(64, minScale: 0.35, ratio: (0.5, 2), valXtra: 0.1, maxScale: 0.9)
        ]
        for t in items {
            let d = try TransformCoding.encode(t)
            #expect(text(try TransformCoding.encode(TransformCoding.decodeItem(d))) == text(d), "\(t)")
        }
        let batches: [BatchTransform] = [
            IntToFloat(div: 127.5), Normalize(mean: [0.1, 0.2, 0.3], std: [0.5, 0.6, 0.7]),
            AffineCoordTransform(
                flip: (.dihedral, 0.5), rotate: (10, 0.75), zoom: (1, 1.1, 0.75), warp: (0.2, 0.75),
                size: (24, 32), mode: .nearest, padMode: .zeros, alignCorners: false),
            AffineCoordTransform(),
            RandomResizedCropGPU(
                size: (20, 28), minScale: 0.5, ratio: (0.8, 1.25), mode: .bilinear, validScale: 0.9, maxScale: 1),
            Lighting(brightness: (0.3, 0.5), contrast: nil), RandomCrop(padding: 2, order: 31),
            RandomFlip(p: 0.25, order: 32),
            RandErase(pct: 0.3, maxNum: 2, order: 101), RandCopy(pct: 0.1, maxNum: 5, order: 102)
        ]
        for t in batches {
            let d = try TransformCoding.encode(t)
            let back = try TransformCoding.decodeBatch(d)
            #expect(text(try TransformCoding.encode(back)) == text(d), "\(t)")
            #expect(back.order == t.order && type(of: back) == type(of: t), "\(t)")
        }
        // A decoded pipeline computes what the original does.
        let x = Tensor.rand([2, 3, 24, 24]) * 255
        let original = BatchPipeline(Array(batches.prefix(5))),
            decoded = BatchPipeline(
                try batches.prefix(5).map {
                    try TransformCoding.decodeBatch(TransformCoding.encode($0))
                })
        for training in [false, true] {
            let a = original.apply((x, Tensor([Int64(0), 1])), generator: Generator(seed: 3), training: training).x
            let b = decoded.apply((x, Tensor([Int64(0), 1])), generator: Generator(seed: 3), training: training).x
            #expect(a.shape == b.shape && a.floats == b.floats, "training \(training)")
        }
    }

    @Test func badDescriptionsAreTypedErrors() {
        let bad: [[String: Any]] = [
            ["type": "Resize", "height": 0, "width": 10, "method": "crop", "pad_mode": "zeros"],
            ["type": "Resize", "height": 10, "width": 10, "method": "stretch", "pad_mode": "zeros"],
            ["type": "Resize", "height": "ten", "width": 10, "method": "crop", "pad_mode": "zeros"],
            [
                "type": "RandomResizedCrop", "height": 10, "width": 10, "min_scale": 0, "max_scale": 1, "ratio": [1, 1],
                "val_xtra": 0
            ],
            ["type": "Os.system"]
        ]
        for d in bad { #expect(throws: TransformCodingError.self) { try TransformCoding.decodeItem(d) } }
        let badBatch: [[String: Any]] = [
            ["type": "Normalize", "mean": [0.5], "std": [0]], ["type": "Normalize", "mean": [0.5, 0.5], "std": [1]],
            ["type": "IntToFloat", "div": 0],
            ["type": "Lighting", "brightness": ["max": 1.5, "p": 1], "contrast": NSNull()],
            ["type": "RandErase", "pct": 1.5, "max_num": 1, "order": 100],
            ["type": "AffineCoordTransform", "size": [0, 5]],
            ["type": "BatchFunction"]
        ]
        for d in badBatch { #expect(throws: TransformCodingError.self) { try TransformCoding.decodeBatch(d) } }
        #expect(throws: TransformCodingError.self) { try TransformCoding.encode(BatchFunction { $0 }) }
    }
}
