import Foundation
import SwiftAICore
import SwiftAIData

// Transforms as data, for export bundles: each known transform ⇄ a JSON object `{"type": "Resize", …}` with its
// parameters in snake case. Decoding checks every value before constructing anything (the initialisers' own
// checks are programmer-error stops), so a bundle from a file cannot crash the process or ask for huge images.

/// A transform that cannot be written to, or read from, a description.
public struct TransformCodingError: Error, CustomStringConvertible, Equatable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "transform description: \(reason)" }
}

/// Encodes and decodes the library's item and batch transforms.
public enum TransformCoding {
    /// Largest output side a described transform may ask for.
    public static let maxSide = 8192

    public static func encode(_ t: ItemTransform) throws -> [String: Any] {
        switch t {
        case let r as Resize:
            return [
                "type": "Resize", "height": r.height, "width": r.width, "method": r.method.rawValue,
                "pad_mode": r.padMode.rawValue
            ]
        case let r as RandomResizedCrop:
            return [
                "type": "RandomResizedCrop", "height": r.height, "width": r.width, "min_scale": r.minScale,
                "max_scale": r.maxScale, "ratio": [r.ratio.0, r.ratio.1], "val_xtra": r.valXtra
            ]
        default: throw TransformCodingError("item transform \(t) cannot be exported (known: Resize, RandomResizedCrop)")
        }
    }

    public static func encode(_ t: BatchTransform) throws -> [String: Any] {
        func pair(_ v: (Double, Double)?, _ a: String, _ b: String) -> Any { v.map { [a: $0.0, b: $0.1] } ?? NSNull() }
        switch t {
        case let i as IntToFloat: return ["type": "IntToFloat", "div": i.div]
        case let n as Normalize: return ["type": "Normalize", "mean": n.mean, "std": n.std]
        case let a as AffineCoordTransform:
            return [
                "type": "AffineCoordTransform",
                "flip": a.flip.map {
                    ["kind": $0.kind == .horizontal ? "horizontal" : "dihedral", "p": $0.p] as [String: Any]
                } ?? NSNull(),
                "rotate": pair(a.rotate, "max_degrees", "p"),
                "zoom": a.zoom.map { ["min": $0.min, "max": $0.max, "p": $0.p] } ?? NSNull(),
                "warp": pair(a.warp, "magnitude", "p"), "size": a.size.map { [$0.height, $0.width] } ?? NSNull(),
                "mode": a.mode.rawValue, "pad_mode": a.padMode.rawValue, "align_corners": a.alignCorners
            ]
        case let r as RandomResizedCropGPU:
            return [
                "type": "RandomResizedCropGPU", "size": [r.size.height, r.size.width], "min_scale": r.minScale,
                "max_scale": r.maxScale, "ratio": [r.ratio.min, r.ratio.max], "mode": r.mode.rawValue,
                "valid_scale": r.validScale
            ]
        case let l as Lighting:
            return [
                "type": "Lighting", "brightness": pair(l.brightness, "max", "p"),
                "contrast": pair(l.contrast, "max", "p")
            ]
        case let c as RandomCrop: return ["type": "RandomCrop", "padding": c.padding, "order": c.order]
        case let f as RandomFlip: return ["type": "RandomFlip", "p": f.p, "order": f.order]
        case let e as RandErase:
            return ["type": "RandErase", "pct": e.patches.pct, "max_num": e.patches.maxNum, "order": e.order]
        case let c as RandCopy:
            return ["type": "RandCopy", "pct": c.patches.pct, "max_num": c.patches.maxNum, "order": c.order]
        default:
            throw TransformCodingError(
                "batch transform \(t) cannot be exported (closures are code; known: IntToFloat, Normalize, "
                    + """
                    AffineCoordTransform, RandomResizedCropGPU, Lighting, RandomCrop, RandomFlip, RandErase, RandCopy)
                    """
            )
        }
    }

    public static func decodeItem(_ d: [String: Any]) throws -> ItemTransform {
        let f = Fields(d)
        switch try f.string("type") {
        case "Resize":
            return Resize(
                height: try f.side("height"), width: try f.side("width"),
                method: try f.raw("method", ResizeMethod.self),
                padMode: try f.raw("pad_mode", PadMode.self))
        case "RandomResizedCrop":
            let (minScale, maxScale) = (try f.number("min_scale", 0...1), try f.number("max_scale", 0...1))
            let ratio = try f.pair("ratio", 0.01...100)
            guard minScale > 0 && minScale <= maxScale else { throw f.error("min_scale must be in (0, max_scale]") }
            return RandomResizedCrop(
                height: try f.side("height"), width: try f.side("width"), minScale: minScale, ratio: ratio,
                valXtra: try f.number("val_xtra", 0...1), maxScale: maxScale)
        case let other: throw f.error("unknown item transform '\(other)'")
        }
    }

    public static func decodeBatch(_ d: [String: Any]) throws -> BatchTransform {
        let f = Fields(d)
        switch try f.string("type") {
        case "IntToFloat":
            let div = try f.number("div", 1e-6...1e9)
            return IntToFloat(div: div)
        case "Normalize":
            let mean = try f.numbers("mean", -1e6...1e6), std = try f.numbers("std", -1e6...1e6)
            guard mean.count == std.count, (1...16).contains(mean.count), std.allSatisfy({ $0 != 0 }) else {
                throw f.error("mean and std must have the same length (1…16) and std no zeros")
            }
            return Normalize(mean: mean, std: std)
        case "AffineCoordTransform":
            var flip: (kind: AffineCoordTransform.FlipKind, p: Double)? = nil
            if let g = try f.object("flip") {
                let kind = try g.string("kind")
                guard kind == "horizontal" || kind == "dihedral" else {
                    throw g.error("flip kind must be horizontal or dihedral")
                }
                flip = (kind == "horizontal" ? .horizontal : .dihedral, try g.number("p", 0...1))
            }
            let rotate = try f.object("rotate").map {
                (maxDegrees: try $0.number("max_degrees", 0...360), p: try $0.number("p", 0...1))
            }
            let zoom = try f.object("zoom").map {
                (
                    min: try $0.number("min", 0.01...100), max: try $0.number("max", 0.01...100),
                    p: try $0.number("p", 0...1)
                )
            }
            if let zoom, zoom.min > zoom.max { throw f.error("zoom min must not exceed max") }
            let warp = try f.object("warp").map {
                (magnitude: try $0.number("magnitude", 0...1), p: try $0.number("p", 0...1))
            }
            let size = try f.optionalSize("size")
            return AffineCoordTransform(
                flip: flip, rotate: rotate, zoom: zoom, warp: warp, size: size,
                mode: try f.raw("mode", ResampleMode.self), padMode: try f.raw("pad_mode", PadMode.self),
                alignCorners: try f.bool("align_corners"))
        case "RandomResizedCropGPU":
            guard let size = try f.optionalSize("size") else { throw f.error("size is required") }
            let (minScale, maxScale) = (try f.number("min_scale", 0...1), try f.number("max_scale", 0...1))
            guard minScale > 0 && minScale <= maxScale else { throw f.error("min_scale must be in (0, max_scale]") }
            let ratio = try f.pair("ratio", 0.01...100)
            return RandomResizedCropGPU(
                size: size, minScale: minScale, ratio: (ratio.0, ratio.1), mode: try f.raw("mode", ResampleMode.self),
                validScale: try f.number("valid_scale", 0.01...1), maxScale: maxScale)
        case "Lighting":
            func part(_ k: String) throws -> (max: Double, p: Double)? {
                try f.object(k).map { (max: try $0.number("max", 0...0.999), p: try $0.number("p", 0...1)) }
            }
            return Lighting(brightness: try part("brightness"), contrast: try part("contrast"))
        case "RandomCrop": return RandomCrop(padding: try f.int("padding", 0...64), order: try f.int("order", 0...1000))
        case "RandomFlip": return RandomFlip(p: try f.number("p", 0...1), order: try f.int("order", 0...1000))
        case "RandErase":
            return RandErase(
                pct: try f.number("pct", 0.001...0.999), maxNum: try f.int("max_num", 0...64),
                order: try f.int("order", 0...1000))
        case "RandCopy":
            return RandCopy(
                pct: try f.number("pct", 0.001...0.999), maxNum: try f.int("max_num", 0...64),
                order: try f.int("order", 0...1000))
        case let other: throw f.error("unknown batch transform '\(other)'")
        }
    }
}

/// Typed access to a JSON object's fields, each failure naming the transform and the field.
private struct Fields {
    let d: [String: Any]
    init(_ d: [String: Any]) { self.d = d }

    var name: String { d["type"] as? String ?? "transform" }
    func error(_ why: String) -> TransformCodingError { TransformCodingError("\(name): \(why)") }

    func string(_ k: String) throws -> String {
        guard let s = d[k] as? String else { throw error("'\(k)' must be a string") }
        return s
    }
    func bool(_ k: String) throws -> Bool {
        guard let b = d[k] as? Bool else { throw error("'\(k)' must be true or false") }
        return b
    }
    func number(_ k: String, _ range: ClosedRange<Double>) throws -> Double {
        guard let n = d[k] as? NSNumber, range.contains(n.doubleValue) else {
            throw error("'\(k)' must be a number in \(range.lowerBound)…\(range.upperBound)")
        }
        return n.doubleValue
    }
    func int(_ k: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let n = d[k] as? NSNumber, let i = Int(exactly: n.doubleValue), range.contains(i) else {
            throw error("'\(k)' must be an integer in \(range.lowerBound)…\(range.upperBound)")
        }
        return i
    }
    func side(_ k: String) throws -> Int { try int(k, 1...TransformCoding.maxSide) }
    func numbers(_ k: String, _ range: ClosedRange<Double>) throws -> [Double] {
        guard let a = d[k] as? [NSNumber], a.allSatisfy({ range.contains($0.doubleValue) }) else {
            throw error("'\(k)' must be a list of numbers in \(range.lowerBound)…\(range.upperBound)")
        }
        return a.map(\.doubleValue)
    }
    func pair(_ k: String, _ range: ClosedRange<Double>) throws -> (Double, Double) {
        let a = try numbers(k, range)
        guard a.count == 2, a[0] > 0, a[0] <= a[1] else { throw error("'\(k)' must be two positive, ordered numbers") }
        return (a[0], a[1])
    }
    func optionalSize(_ k: String) throws -> (height: Int, width: Int)? {
        if d[k] == nil || d[k] is NSNull { return nil }
        guard let a = d[k] as? [NSNumber], a.count == 2,
            let h = Int(exactly: a[0].doubleValue), let w = Int(exactly: a[1].doubleValue),
            (1...TransformCoding.maxSide).contains(h), (1...TransformCoding.maxSide).contains(w)
        else {
            throw error("'\(k)' must be null or [height, width] in 1…\(TransformCoding.maxSide)")
        }
        return (h, w)
    }
    func raw<T: RawRepresentable>(_ k: String, _: T.Type) throws -> T where T.RawValue == String {
        guard let v = T(rawValue: try string(k)) else { throw error("'\(k)' has an unknown value '\(d[k]!)'") }
        return v
    }
    /// A nested object, or nil for null / absent.
    func object(_ k: String) throws -> Fields? {
        if d[k] == nil || d[k] is NSNull { return nil }
        guard let o = d[k] as? [String: Any] else { throw error("'\(k)' must be null or an object") }
        var inner = o
        inner["type"] = "\(name).\(k)"
        return Fields(inner)
    }
}
