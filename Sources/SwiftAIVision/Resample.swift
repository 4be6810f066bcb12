import SwiftAICore

/// How ``Image/resized(width:height:resampling:)`` computes output pixels (Pillow's filters of the same names).
public enum Resampling: Sendable {
    /// Pillow's `BILINEAR`: a triangle filter whose support widens with the reduction factor when downsampling
    /// (antialiased), in 22-bit fixed point; results equal Pillow's.
    case bilinear
    /// Pillow's `NEAREST`: the source pixel under each output pixel's centre (for masks).
    case nearest
}

extension Image {
    /// This image resampled to `width`×`height`, as Pillow's `Image.resize((width, height), resample)`.
    public func resized(width: Int, height: Int, resampling: Resampling = .bilinear) -> Image {
        resizedRegion(
            x: 0, y: 0, width: self.width, height: self.height, toWidth: width, toHeight: height,
            resampling: resampling)
    }

    /// The `w`×`h` region at (`x`, `y`) resampled to `toWidth`×`toHeight`: the same as cropping then resizing, without
    /// the intermediate copy.
    func resizedRegion(
        x: Int, y: Int, width w: Int, height h: Int, toWidth: Int, toHeight: Int,
        resampling: Resampling
    ) -> Image {
        require(toWidth > 0 && toHeight > 0, "Image.resized: output size \(toWidth)x\(toHeight) must be positive")
        require(
            w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= width && y + h <= height,
            "Image.resized: region \(w)x\(h) at (\(x), \(y)) must be non-empty and inside the \(width)x\(height) image")
        let c = channels
        var out = [UInt8](repeating: 0, count: toWidth * toHeight * c)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let region = PixelRegion(
                    base: src.baseAddress! + (y * width + x) * c, width: w, height: h,
                    rowStride: width * c, channels: c)
                switch resampling {
                case .bilinear: resampleBilinear(region, into: dst.baseAddress!, width: toWidth, height: toHeight)
                case .nearest: resampleNearest(region, into: dst.baseAddress!, width: toWidth, height: toHeight)
                }
            }
        }
        return Image(width: toWidth, height: toHeight, channels: c, pixels: out)
    }
}

/// A rectangle of interleaved 8-bit pixels inside a larger buffer.
struct PixelRegion {
    var base: UnsafePointer<UInt8>
    var width: Int
    var height: Int
    /// Values from one row to the next.
    var rowStride: Int
    var channels: Int
}

/// Pillow's fixed-point precision: coefficients are scaled by 2^22 (`PRECISION_BITS = 32 - 8 - 2`).
private let precisionBits: Int32 = 22
private let half: Int32 = 1 << (precisionBits - 1)

/// Per-output-position source windows and fixed-point weights of Pillow's bilinear filter along one axis.
struct ResampleCoefficients {
    /// Maximum taps per output position (row length of `weights`).
    let taps: Int
    /// First source index per output position.
    var first: [Int32]
    /// Taps actually used per output position.
    var count: [Int32]
    /// `taps` weights per output position, summing to about 2^22.
    var weights: [Int32]

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the triangle filter (support 1) over `inSize` →
    /// `outSize`. With `fixedWindows` (and `inSize` ≥ `taps`) every window is widened to `taps` source positions
    /// with zero weights (shifted left at the far edge), so loops run a constant trip count with unchanged sums.
    init(inSize: Int, outSize: Int, fixedWindows: Bool = false) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filterScale
        taps = Int(support.rounded(.up)) * 2 + 1
        first = [Int32](repeating: 0, count: outSize)
        count = [Int32](repeating: 0, count: outSize)
        weights = [Int32](repeating: 0, count: outSize * taps)
        var k = [Double](repeating: 0, count: taps)
        let inverse = 1 / filterScale
        for o in 0..<outSize {
            let center = (Double(o) + 0.5) * scale
            // C's (int) truncation toward zero, as Pillow rounds.
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), inSize)
            var total = 0.0
            for i in 0..<(hi - lo) {
                let d = abs((Double(i + lo) - center + 0.5) * inverse)
                k[i] = d < 1 ? 1 - d : 0
                total += k[i]
            }
            let shift = fixedWindows && inSize >= taps ? max(lo + taps - inSize, 0) : 0
            for i in 0..<(hi - lo) {
                let w = total != 0 ? k[i] / total : k[i]
                weights[o * taps + i + shift] = Int32(
                    w < 0
                        ? -0.5 + w * Double(1 << precisionBits)
                        : 0.5 + w * Double(1 << precisionBits))
            }
            first[o] = Int32(lo - shift)
            count[o] = Int32(fixedWindows && inSize >= taps ? taps : hi - lo)
        }
    }
}

/// Pillow's `clip8`: drops the fixed-point fraction and saturates to 0...255.
@inline(__always) private func clip8(_ v: Int32) -> UInt8 { UInt8(clamping: v >> precisionBits) }

/// `clip8` for the vector paths. The triangle filter's weights are non-negative and each window's rounded weights sum
/// to 2^22 within `taps`/2, so below `vectorTapLimit` taps a sum of 8-bit values already lands in 0...255 after the
/// shift: saturation never triggers and plain narrowing gives the same bytes.
@inline(__always) private func narrow<V: SIMD>(_ sum: V) -> V where V.Scalar == Int32 { sum &>> precisionBits }
private let vectorTapLimit = 16_000

/// Pillow's two-pass bilinear resample, each pass rounding to 8 bits; a pass whose size does not change is skipped.
/// As Pillow 13, the vertical pass runs first when the height shrinks by more than twice as many pixels as the
/// width (the order changes results by ±1); otherwise the horizontal pass runs first, over just the source rows the
/// vertical pass reads.
private func resampleBilinear(_ src: PixelRegion, into out: UnsafeMutablePointer<UInt8>, width: Int, height: Int) {
    let c = src.channels
    if width == src.width && height == src.height {
        for row in 0..<height {
            (out + row * width * c).update(from: src.base + row * src.rowStride, count: width * c)
        }
        return
    }
    let vertical = ResampleCoefficients(inSize: src.height, outSize: height)
    if width == src.width {
        verticalPass(src, rowOffset: 0, vertical, into: out)
        return
    }
    let horizontal = ResampleCoefficients(inSize: src.width, outSize: width, fixedWindows: true)
    if height == src.height {
        horizontalPass(src, rows: 0..<height, horizontal, into: out)
        return
    }
    let shrink = src.height - height
    if shrink > 0 && shrink > (src.width - width) * 2 {
        let temp = UnsafeMutablePointer<UInt8>.allocate(capacity: src.width * height * c)
        defer { temp.deallocate() }
        verticalPass(src, rowOffset: 0, vertical, into: temp)
        let mid = PixelRegion(
            base: UnsafePointer(temp), width: src.width, height: height, rowStride: src.width * c, channels: c)
        horizontalPass(mid, rows: 0..<height, horizontal, into: out)
        return
    }
    let firstRow = Int(vertical.first[0]), lastRow = Int(vertical.first[height - 1] + vertical.count[height - 1])
    let temp = UnsafeMutablePointer<UInt8>.allocate(capacity: width * (lastRow - firstRow) * c)
    defer { temp.deallocate() }
    horizontalPass(src, rows: firstRow..<lastRow, horizontal, into: temp)
    let mid = PixelRegion(
        base: UnsafePointer(temp), width: width, height: lastRow - firstRow, rowStride: width * c, channels: c)
    verticalPass(mid, rowOffset: firstRow, vertical, into: out)
}

/// Resamples each row in `rows` of `src` to `coefficients.first.count` pixels, writing rows contiguously from `out`.
/// RGB rows go two at a time, each pixel accumulating as one 4-lane vector per tap (the 4th lane, the next pixel's
/// red, is discarded); an output pixel reading the row's last source pixel takes the scalar path so the 4-byte load
/// stays inside the row.
private func horizontalPass(
    _ src: PixelRegion, rows: Range<Int>, _ coefficients: ResampleCoefficients,
    into out: UnsafeMutablePointer<UInt8>
) {
    let outWidth = coefficients.first.count, taps = coefficients.taps, c = src.channels
    coefficients.weights.withUnsafeBufferPointer { wbuf in
        coefficients.first.withUnsafeBufferPointer { firsts in
            coefficients.count.withUnsafeBufferPointer { counts in
                let kk = wbuf.baseAddress!
                func scalar(_ o: Int, _ line: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<UInt8>) {
                    let k = kk + o * taps, p = line + Int(firsts[o]) * c
                    for ch in 0..<c {
                        var sum = half
                        for t in 0..<Int(counts[o]) { sum &+= Int32(p[t * c + ch]) &* k[t] }
                        dst[o * c + ch] = clip8(sum)
                    }
                }
                // Stores 4 bytes; the 4th is overwritten by the next pixel (the last output pixel is always scalar).
                @inline(__always) func store(_ sum: SIMD4<Int32>, _ d: UnsafeMutablePointer<UInt8>) {
                    UnsafeMutableRawPointer(d).storeBytes(
                        of: SIMD4<UInt8>(truncatingIfNeeded: narrow(sum)), as: SIMD4<UInt8>.self)
                }
                // Output pixels before `vectorEnd` never read the last source pixel; the last output pixel always does.
                var vectorEnd = outWidth - 1
                while c == 3 && vectorEnd > 0 && Int(firsts[vectorEnd - 1] + counts[vectorEnd - 1]) >= src.width {
                    vectorEnd -= 1
                }
                var r = 0
                while r < rows.count {
                    let pair = c == 3 && r + 1 < rows.count && taps < vectorTapLimit
                    let lineA = src.base + (rows.lowerBound + r) * src.rowStride, lineB = lineA + src.rowStride
                    let dstA = out + r * outWidth * c, dstB = dstA + outWidth * c
                    if pair {
                        for o in 0..<vectorEnd {
                            let k = kk + o * taps, offset = Int(firsts[o]) * 3
                            var a = SIMD4<Int32>(repeating: half), b = a
                            for t in 0..<Int(counts[o]) {
                                let w = SIMD4<Int32>(repeating: k[t])
                                a &+=
                                    SIMD4<Int32>(
                                        truncatingIfNeeded: UnsafeRawPointer(lineA + offset + 3 * t).loadUnaligned(
                                            as: SIMD4<UInt8>.self)) &* w
                                b &+=
                                    SIMD4<Int32>(
                                        truncatingIfNeeded: UnsafeRawPointer(lineB + offset + 3 * t).loadUnaligned(
                                            as: SIMD4<UInt8>.self)) &* w
                            }
                            store(a, dstA + o * 3)
                            store(b, dstB + o * 3)
                        }
                        for o in vectorEnd..<outWidth {
                            scalar(o, lineA, dstA)
                            scalar(o, lineB, dstB)
                        }
                        r += 2
                    } else {
                        for o in 0..<outWidth { scalar(o, lineA, dstA) }
                        r += 1
                    }
                }
            }
        }
    }
}

/// Resamples the columns of `src` (whose row 0 is source row `rowOffset`) to `coefficients.first.count` rows,
/// 16 values at a time along the contiguous rows.
private func verticalPass(
    _ src: PixelRegion, rowOffset: Int, _ coefficients: ResampleCoefficients,
    into out: UnsafeMutablePointer<UInt8>
) {
    let n = src.width * src.channels, taps = coefficients.taps
    coefficients.weights.withUnsafeBufferPointer { wbuf in
        for o in 0..<coefficients.first.count {
            let k = wbuf.baseAddress! + o * taps, count = Int(coefficients.count[o])
            let top = src.base + (Int(coefficients.first[o]) - rowOffset) * src.rowStride
            let dst = out + o * n
            var i = 0
            while taps < vectorTapLimit && i + 16 <= n {
                var sum = SIMD16<Int32>(repeating: half)
                for t in 0..<count {
                    let v = UnsafeRawPointer(top + t * src.rowStride + i).loadUnaligned(as: SIMD16<UInt8>.self)
                    sum &+= SIMD16<Int32>(truncatingIfNeeded: v) &* k[t]
                }
                UnsafeMutableRawPointer(dst + i).storeBytes(
                    of: SIMD16<UInt8>(truncatingIfNeeded: narrow(sum)), as: SIMD16<UInt8>.self)
                i += 16
            }
            while i < n {
                var sum = half
                for t in 0..<count { sum &+= Int32(top[t * src.rowStride + i]) &* k[t] }
                dst[i] = clip8(sum)
                i += 1
            }
        }
    }
}

/// Pillow's `NEAREST` resize (`ImagingScaleAffine`): source coordinate `(o + 0.5)·scale`, accumulated in doubles as
/// Pillow does, truncated.
private func resampleNearest(_ src: PixelRegion, into out: UnsafeMutablePointer<UInt8>, width: Int, height: Int) {
    let c = src.channels
    func positions(_ inSize: Int, _ outSize: Int) -> [Int] {
        let step = Double(inSize) / Double(outSize)
        var at = step * 0.5
        return (0..<outSize).map { _ in
            defer { at += step }
            return min(Int(at), inSize - 1)
        }
    }
    let xs = positions(src.width, width), ys = positions(src.height, height)
    for (o, y) in ys.enumerated() {
        let line = src.base + y * src.rowStride, dst = out + o * width * c
        for (i, x) in xs.enumerated() {
            for ch in 0..<c { dst[i * c + ch] = line[x * c + ch] }
        }
    }
}
