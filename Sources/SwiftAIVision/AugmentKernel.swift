import SwiftAICore
#if canImport(Glibc)
    import Glibc
#endif

// The fused batch resample: one pass over each output item that reads the source batch (uint8 or float32, any
// strides), maps every output pixel through one projective coordinate map, samples it as PyTorch's `grid_sample`
// does (bilinear or nearest, zeros/border/reflection padding, align_corners) and writes the lit, normalised float32
// value channels-last.

/// A 3×3 matrix acting on column vectors `(x, y, 1)`: affine maps and perspective warps in one type.
struct Mat3: Equatable {
    var m: [Double]

    init(_ m: [Double]) { self.m = m }
    static let identity = Mat3([1, 0, 0, 0, 1, 0, 0, 0, 1])

    /// The map `x ↦ sx·x + tx`, `y ↦ sy·y + ty`.
    static func scaleShift(sx: Double, tx: Double, sy: Double, ty: Double) -> Mat3 {
        Mat3([sx, 0, tx, 0, sy, ty, 0, 0, 1])
    }

    /// `self ∘ other`: applies `other` first.
    static func * (a: Mat3, b: Mat3) -> Mat3 {
        var r = [Double](repeating: 0, count: 9)
        for i in 0..<3 {
            for j in 0..<3 {
                r[i * 3 + j] = a.m[i * 3] * b.m[j] + a.m[i * 3 + 1] * b.m[3 + j] + a.m[i * 3 + 2] * b.m[6 + j]
            }
        }
        return Mat3(r)
    }

    /// The image of point `(x, y)`, divided by its third coordinate.
    func apply(_ x: Double, _ y: Double) -> (x: Double, y: Double) {
        let w = m[6] * x + m[7] * y + m[8]
        return ((m[0] * x + m[1] * y + m[2]) / w, (m[3] * x + m[4] * y + m[5]) / w)
    }

    /// Whether every entry is within `tolerance` of the identity's.
    func isIdentity(tolerance: Double) -> Bool { zip(m, Mat3.identity.m).allSatisfy { abs($0 - $1) <= tolerance } }
}

/// Normalised coordinate (−1…1) of pixel index `i` along an axis of `n` pixels, as `F.affine_grid` places them:
/// `-1 + 2i/(n-1)` with align_corners, `(2i+1)/n - 1` without; a single pixel sits at 0.
func normaliseAxis(_ n: Int, alignCorners: Bool) -> (scale: Double, shift: Double) {
    if n <= 1 { return (0, 0) }
    return alignCorners ? (2 / Double(n - 1), -1) : (2 / Double(n), 1 / Double(n) - 1)
}

/// Pixel coordinate of normalised `g` along an axis of `n` pixels (`grid_sample`'s unnormalisation).
func unnormaliseAxis(_ n: Int, alignCorners: Bool) -> (scale: Double, shift: Double) {
    alignCorners ? (Double(n - 1) / 2, Double(n - 1) / 2) : (Double(n) / 2, Double(n - 1) / 2)
}

/// Output pixel `(j, i)` of a `width`×`height` grid → normalised coordinates.
func normalisingMap(width: Int, height: Int, alignCorners: Bool) -> Mat3 {
    let x = normaliseAxis(width, alignCorners: alignCorners), y = normaliseAxis(height, alignCorners: alignCorners)
    return .scaleShift(sx: x.scale, tx: x.shift, sy: y.scale, ty: y.shift)
}

/// Normalised coordinates → pixel coordinates of a `width`×`height` source.
func unnormalisingMap(width: Int, height: Int, alignCorners: Bool) -> Mat3 {
    let x = unnormaliseAxis(width, alignCorners: alignCorners), y = unnormaliseAxis(height, alignCorners: alignCorners)
    return .scaleShift(sx: x.scale, tx: x.shift, sy: y.scale, ty: y.shift)
}

/// fastai's `find_coeffs`: the perspective map sending `to[k]` onto `from[k]` for four point pairs (8×8 solve).
func perspectiveCoefficients(from p1: [(Double, Double)], to p2: [(Double, Double)]) -> Mat3 {
    var a = [[Double]](), b = [Double]()
    for k in 0..<4 {
        a.append([p2[k].0, p2[k].1, 1, 0, 0, 0, -p1[k].0 * p2[k].0, -p1[k].0 * p2[k].1])
        a.append([0, 0, 0, p2[k].0, p2[k].1, 1, -p1[k].1 * p2[k].0, -p1[k].1 * p2[k].1])
        b += [p1[k].0, p1[k].1]
    }
    for col in 0..<8 {  // Gaussian elimination with partial pivoting
        let pivot = (col..<8).max { abs(a[$0][col]) < abs(a[$1][col]) }!
        a.swapAt(col, pivot)
        b.swapAt(col, pivot)
        for r in (col + 1)..<8 {
            let f = a[r][col] / a[col][col]
            for c in col..<8 { a[r][c] -= f * a[col][c] }
            b[r] -= f * b[col]
        }
    }
    var x = [Double](repeating: 0, count: 8)
    for r in stride(from: 7, through: 0, by: -1) {
        x[r] = (b[r] - ((r + 1)..<8).reduce(0) { $0 + a[r][$1] * x[$1] }) / a[r][r]
    }
    return Mat3(x + [1])
}

/// What one item's pass does.
struct ItemPass {
    /// Output pixel `(j, i)` → pixel of the sampled source region (after pooling); `nil`: the output is the region.
    var map: Mat3?
    /// The part of the source item sampled: top, left, height, width.
    var region: (top: Int, left: Int, height: Int, width: Int)
    /// fastai's 'area' pre-step: the region is first average-pooled (`adaptive_avg_pool2d`) to this size.
    var pooled: (height: Int, width: Int)?
    /// Brightness and contrast, or `nil` for none (the item's lookup table is built on the worker thread).
    var lighting: LightingDraw?
}

/// Settings shared by a batch's items.
struct PassSettings {
    var height: Int, width: Int
    var mode: ResampleMode
    var padMode: PadMode
    var alignCorners: Bool
    /// Source values are multiplied by this (IntToFloat's 1/255) before lighting.
    var scale: Float
    /// Per channel, after lighting: `v·normScale[c] + normShift[c]` (Normalize).
    var normScale: [Float], normShift: [Float]
}

/// `sigmoid(c·(logit(x) + logit(b)))` (fastai's brightness then contrast in logit space) by linear interpolation in a
/// table of `size + 1` values over `x ∈ [0, 1]`. Inputs in the first and last interval, where the curve is steepest
/// (`x^c` near 0), are computed exactly; elsewhere the interpolation error is below 5e-5 for contrast in
/// [0.8, 1.25] and brightness in [0.4, 0.6] (fastai's default ranges at `maxLighting` 0.2).
struct LightingTable {
    static let size = 2048
    /// logit of each grid point, clamped as fastai's `logit` clamps (1e-7).
    static let logits: [Float] = (0...size).map { k in
        let x = Swift.min(Swift.max(Double(k) / Double(size), 1e-7), 1 - 1e-7)
        return Float(Glibc.log(x / (1 - x)))
    }
    /// The table (owned; ``lookup`` points into it).
    let values: UnsafeMutablePointer<Float>
    let shift: Float, contrast: Float

    init(brightness: Double, contrast: Double) {
        shift = Float(Glibc.log(brightness / (1 - brightness)))
        self.contrast = Float(contrast)
        values = .allocate(capacity: LightingTable.size + 1)
        for (k, l) in LightingTable.logits.enumerated() { values[k] = 1 / (1 + expf(-self.contrast * (l + shift))) }
    }

    func deallocate() { values.deallocate() }

    var lookup: LightingLookup { LightingLookup(table: values, shift: shift, contrast: contrast) }
}

/// Evaluates a ``LightingTable`` (a plain value, cheap to pass into loops).
struct LightingLookup {
    let table: UnsafePointer<Float>
    let shift: Float, contrast: Float

    @inline(__always) func callAsFunction(_ v: Float) -> Float {
        let n = LightingTable.size
        let t = Swift.min(Swift.max(v, 0), 1) * Float(n)
        let k = Int(t)
        if UInt(bitPattern: k &- 1) >= UInt(n - 2) { return edge(v, t) }
        let f = t - Float(k)
        return table[k] + f * (table[k + 1] - table[k])
    }

    /// The first and last interval (exact unless on a grid point) and 1.
    @inline(never) func edge(_ v: Float, _ t: Float) -> Float {
        if t == 0 { return table[0] }
        if t == Float(LightingTable.size) { return table[LightingTable.size] }
        return exact(v)
    }

    /// The exact formula (fastai's float32 `logit` clamps to [1e-7, 1-1e-7]).
    func exact(_ v: Float) -> Float {
        let x = Swift.min(Swift.max(v, 1e-7), 1 - 1e-7)
        return 1 / (1 + expf(-contrast * (logf(x / (1 - x)) + shift)))
    }
}

/// Source element types the kernel reads.
protocol KernelSource { var kernelFloat: Float { get } }
extension UInt8: KernelSource { @inline(__always) var kernelFloat: Float { Float(self) } }
extension Float: KernelSource { @inline(__always) var kernelFloat: Float { self } }

/// Runs `items[b]` for every item of `x` ([B, C, H, W], uint8 or float32, any strides) into a new float32
/// channels-last [B, C, settings.height, settings.width] tensor, items in parallel (serial on loader threads).
func runPasses(_ x: Tensor, _ items: [ItemPass], _ s: PassSettings) -> Tensor {
    let b = x.shape[0], c = x.shape[1]
    let out = Tensor.uninitialized([b, c, s.height, s.width], dtype: .float32, channelsLast: true)
    let op = out.pointer(Float.self)
    let perItem = s.height * s.width * c
    Parallel.forEachChunk(b, grain: 1) { range in
        for i in range {
            let dst = op + i * perItem
            switch x.dtype {
            case .uint8: runItem(x.pointer(UInt8.self) + i * x.strides[0], x, items[i], s, dst)
            default: runItem(x.pointer(Float.self) + i * x.strides[0], x, items[i], s, dst)
            }
        }
    }
    return out
}

/// One item: pools the region if asked, then samples (or copies) it into `dst`.
private func runItem<T: KernelSource>(
    _ base: UnsafePointer<T>, _ x: Tensor, _ item: ItemPass, _ s: PassSettings,
    _ dst: UnsafeMutablePointer<Float>
) {
    let c = x.shape[1]
    let r = item.region
    let src = Source(
        base: base + r.top * x.strides[2] + r.left * x.strides[3], height: r.height, width: r.width,
        channels: c, channelStride: x.strides[1], rowStride: x.strides[2], colStride: x.strides[3])
    let lighting = item.lighting.map { LightingTable(brightness: $0.brightness, contrast: $0.contrast) }
    let finish = RowFinish(s, channels: c, lighting: lighting?.lookup)
    defer { finish.deallocate(); lighting?.deallocate() }
    if let pooled = item.pooled {
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: pooled.height * pooled.width * c)
        defer { buffer.deallocate() }
        areaPool(src, into: buffer, height: pooled.height, width: pooled.width)
        let p = Source(
            base: UnsafePointer(buffer), height: pooled.height, width: pooled.width, channels: c,
            channelStride: 1, rowStride: pooled.width * c, colStride: c)
        sample(p, item.map ?? .identity, s, finish, dst)
    } else if let map = item.map {
        sample(src, map, s, finish, dst)
    } else {
        copyItem(src, finish, dst)
    }
}

/// A strided view of one item's pixels.
struct Source<T: KernelSource> {
    var base: UnsafePointer<T>
    var height: Int, width: Int, channels: Int
    var channelStride: Int, rowStride: Int, colStride: Int

    /// Channels-last with three channels: a pixel's values are three neighbours.
    var isPackedRGB: Bool { channels == 3 && channelStride == 1 && colStride == 3 }
}

/// Turns a row of sampled values (source units, channels interleaved) into output values in place: scale, optional
/// lighting table, normalisation — `v·a[k] + b[k]` with per-position factors, so the common case vectorises.
struct RowFinish {
    let a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>
    let scale: Float
    let lighting: LightingLookup?

    init(_ s: PassSettings, channels c: Int, lighting: LightingLookup?) {
        let n = s.width * c
        a = .allocate(capacity: n)
        b = .allocate(capacity: n)
        for k in 0..<n {
            a[k] = lighting == nil ? s.scale * s.normScale[k % c] : s.normScale[k % c]
            b[k] = s.normShift[k % c]
        }
        scale = s.scale
        self.lighting = lighting
    }

    func deallocate() {
        a.deallocate()
        b.deallocate()
    }

    @inline(__always) func callAsFunction(_ row: UnsafeMutablePointer<Float>, count n: Int) {
        if let lighting {
            for k in 0..<n { row[k] = lighting(row[k] * scale) * a[k] + b[k] }
        } else {
            for k in 0..<n { row[k] = row[k] * a[k] + b[k] }
        }
    }
}

/// Output = region, pixel for pixel.
private func copyItem<T>(_ src: Source<T>, _ finish: RowFinish, _ dst: UnsafeMutablePointer<Float>) {
    let c = src.channels, n = src.width * c
    for i in 0..<src.height {
        let o = dst + i * n
        for j in 0..<src.width {
            let p = src.base + i * src.rowStride + j * src.colStride
            for ch in 0..<c { o[j * c + ch] = p[ch * src.channelStride].kernelFloat }
        }
        finish(o, count: n)
    }
}

/// `F.adaptive_avg_pool2d` of `src` to `height`×`width` into a channels-last float buffer. Separable: each output
/// row first sums its source rows (cells span rows `⌊i·H/h⌋ ..< ⌈(i+1)·H/h⌉`, likewise columns), then sums column
/// cells; runs of equally wide cells one column apart are summed as whole shifted rows, so both steps vectorise.
private func areaPool<T>(_ src: Source<T>, into dst: UnsafeMutablePointer<Float>, height: Int, width: Int) {
    let c = src.channels, w = src.width, n = w * c
    let rows = UnsafeMutablePointer<Float>.allocate(capacity: n)
    defer { rows.deallocate() }
    // Column cells grouped into runs: (first output column, count, first source column, cell width).
    var runs: [(j: Int, count: Int, x: Int, width: Int)] = []
    for j in 0..<width {
        let x0 = j * w / width, cw = ((j + 1) * w + width - 1) / width - x0
        if let last = runs.last, last.width == cw, last.x + last.count == x0, last.j + last.count == j {
            runs[runs.count - 1].count += 1
        } else {
            runs.append((j, 1, x0, cw))
        }
    }
    let dense = src.colStride == c && src.channelStride == 1
    for i in 0..<height {
        let y0 = i * src.height / height, y1 = ((i + 1) * src.height + height - 1) / height
        rows.update(repeating: 0, count: n)
        for y in y0..<y1 {
            let row = src.base + y * src.rowStride
            if dense {
                for k in 0..<n { rows[k] += row[k].kernelFloat }
            } else {
                for j in 0..<w {
                    for ch in 0..<c { rows[j * c + ch] += row[j * src.colStride + ch * src.channelStride].kernelFloat }
                }
            }
        }
        let out = dst + i * width * c
        for run in runs {
            let o = out + run.j * c, r = rows + run.x * c, m = run.count * c
            let f = 1 / Float((y1 - y0) * run.width)
            o.update(from: r, count: m)
            for t in 1..<Swift.max(run.width, 1) {
                let rt = r + t * c
                for k in 0..<m { o[k] += rt[k] }
            }
            for k in 0..<m { o[k] *= f }
        }
    }
}

/// torch's `reflect_coordinates` then `clip_coordinates` for one axis of `n` pixels.
@inline(never) private func reflect(_ v: Float, _ n: Int, alignCorners: Bool) -> Float {
    let lo: Float = alignCorners ? 0 : -0.5, span: Float = alignCorners ? Float(n - 1) : Float(n)
    if span <= 0 { return 0 }
    let a = Swift.min(abs(v - lo), 1e6)
    let flips = Int(a / span)
    let extra = a - Float(flips) * span
    let r = flips & 1 == 0 ? extra + lo : span - extra + lo
    return Swift.min(Swift.max(r, 0), Float(n - 1))
}

/// Applies the padding mode to `count` coordinates along an axis of `n` pixels, in place.
private func pad(_ v: UnsafeMutablePointer<Float>, count: Int, size n: Int, _ mode: PadMode, alignCorners: Bool) {
    let hi = Float(n - 1)
    switch mode {
    case .zeros:  // out-of-range corners read as 0; keep values small enough for Int conversion
        for k in 0..<count { v[k] = Swift.min(Swift.max(v[k], -2), hi + 2) }
    case .border:
        for k in 0..<count { v[k] = Swift.min(Swift.max(v[k], 0), hi) }
    case .reflection:
        for k in 0..<count where !(v[k] >= 0 && v[k] <= hi) { v[k] = reflect(v[k], n, alignCorners: alignCorners) }
    }
}

/// Samples `src` at `map(j, i)` for every output pixel, as `grid_sample` with the settings' mode and padding.
private func sample<T>(
    _ src: Source<T>, _ map: Mat3, _ s: PassSettings, _ finish: RowFinish, _ dst: UnsafeMutablePointer<Float>
) {
    let m: [Float] = map.m.map { Float($0) }
    let (m0, m3, m6) = (m[0], m[3], m[6])
    let w = s.width, c = src.channels
    let xs = UnsafeMutablePointer<Float>.allocate(capacity: w), ys = UnsafeMutablePointer<Float>.allocate(capacity: w)
    let scratch = RowScratch(count: w)
    defer { xs.deallocate(); ys.deallocate(); scratch.deallocate() }
    for i in 0..<s.height {
        let fi = Float(i)
        let bx = m[1] * fi + m[2], by = m[4] * fi + m[5], bz = m[7] * fi + m[8]
        for j in 0..<w {
            let fj = Float(j)
            let z = m6 * fj + bz
            xs[j] = (m0 * fj + bx) / z
            ys[j] = (m3 * fj + by) / z
        }
        pad(xs, count: w, size: src.width, s.padMode, alignCorners: s.alignCorners)
        pad(ys, count: w, size: src.height, s.padMode, alignCorners: s.alignCorners)
        let row = dst + i * w * c
        if s.mode == .nearest {
            nearestRow(src, xs, ys, w, row)
        } else if src.isPackedRGB {
            bilinearRowRGB(src, xs, ys, w, row, scratch)
        } else {
            bilinearRow(src, xs, ys, w, row)
        }
        finish(row, count: w * c)
    }
}

/// Bilinear samples of a packed RGB source. A first vectorised loop turns coordinates into the top-left neighbour's
/// offset (-1 when a neighbour is outside) and the fractions; the gather loop then has short dependency chains.
/// Pixels whose four neighbours are not all inside go through `bilinearEdge`.
@inline(__always) private func bilinearRowRGB<T>(
    _ src: Source<T>, _ xs: UnsafeMutablePointer<Float>, _ ys: UnsafeMutablePointer<Float>,
    _ count: Int, _ out: UnsafeMutablePointer<Float>, _ scratch: RowScratch
) {
    let rs = src.rowStride, lastX = Float(src.width - 2), lastY = Float(src.height - 2)
    let off = scratch.offsets, fx = scratch.fx, fy = scratch.fy
    for j in 0..<count {
        let x = xs[j], y = ys[j]
        let xf = x.rounded(.down), yf = y.rounded(.down)
        let inside = xf >= 0 && yf >= 0 && xf <= lastX && yf <= lastY
        off[j] = inside ? Int32(yf) &* Int32(truncatingIfNeeded: rs) &+ Int32(xf) &* 3 : -1
        fx[j] = x - xf
        fy[j] = y - yf
    }
    for j in 0..<count {
        let o = out + j &* 3
        guard off[j] >= 0 else {
            bilinearEdge(src, xs[j], ys[j], o)
            continue
        }
        let tx = fx[j], ty = fy[j]
        let w00 = (1 - tx) * (1 - ty), w01 = tx * (1 - ty), w10 = (1 - tx) * ty, w11 = tx * ty
        let p = src.base + Int(off[j]), q = p + rs
        o[0] = w00 * p[0].kernelFloat + w01 * p[3].kernelFloat + w10 * q[0].kernelFloat + w11 * q[3].kernelFloat
        o[1] = w00 * p[1].kernelFloat + w01 * p[4].kernelFloat + w10 * q[1].kernelFloat + w11 * q[4].kernelFloat
        o[2] = w00 * p[2].kernelFloat + w01 * p[5].kernelFloat + w10 * q[2].kernelFloat + w11 * q[5].kernelFloat
    }
}

/// Per-row buffers of the packed RGB sampler.
struct RowScratch {
    let offsets: UnsafeMutablePointer<Int32>, fx: UnsafeMutablePointer<Float>, fy: UnsafeMutablePointer<Float>

    init(count: Int) {
        offsets = .allocate(capacity: count)
        fx = .allocate(capacity: count)
        fy = .allocate(capacity: count)
    }

    func deallocate() {
        offsets.deallocate()
        fx.deallocate()
        fy.deallocate()
    }
}

/// Bilinear samples of any strided source.
private func bilinearRow<T>(
    _ src: Source<T>, _ xs: UnsafeMutablePointer<Float>, _ ys: UnsafeMutablePointer<Float>,
    _ count: Int, _ out: UnsafeMutablePointer<Float>
) {
    for j in 0..<count { bilinearEdge(src, xs[j], ys[j], out + j * src.channels) }
}

/// One bilinear sample with `grid_sample`'s bounds checks: neighbours outside the source contribute 0.
@inline(never) private func bilinearEdge<T>(
    _ src: Source<T>, _ x: Float, _ y: Float, _ out: UnsafeMutablePointer<Float>
) {
    let xf = x.rounded(.down), yf = y.rounded(.down)
    let ix = Int(xf), iy = Int(yf)
    let tx = x - xf, ty = y - yf
    let w00 = (1 - tx) * (1 - ty), w01 = tx * (1 - ty), w10 = (1 - tx) * ty, w11 = tx * ty
    let inX0 = ix >= 0 && ix < src.width, inX1 = ix + 1 >= 0 && ix + 1 < src.width
    let inY0 = iy >= 0 && iy < src.height, inY1 = iy + 1 >= 0 && iy + 1 < src.height
    let rs = src.rowStride, ks = src.colStride
    for ch in 0..<src.channels {
        let q = src.base + ch * src.channelStride
        var v: Float = 0
        if inY0 && inX0 { v += w00 * q[iy * rs + ix * ks].kernelFloat }
        if inY0 && inX1 { v += w01 * q[iy * rs + (ix + 1) * ks].kernelFloat }
        if inY1 && inX0 { v += w10 * q[(iy + 1) * rs + ix * ks].kernelFloat }
        if inY1 && inX1 { v += w11 * q[(iy + 1) * rs + (ix + 1) * ks].kernelFloat }
        out[ch] = v
    }
}

/// Nearest samples (`nearbyint`, ties to even); outside the source reads 0.
private func nearestRow<T>(
    _ src: Source<T>, _ xs: UnsafeMutablePointer<Float>, _ ys: UnsafeMutablePointer<Float>,
    _ count: Int, _ out: UnsafeMutablePointer<Float>
) {
    let c = src.channels
    for j in 0..<count {
        let ix = Int(xs[j].rounded(.toNearestOrEven)), iy = Int(ys[j].rounded(.toNearestOrEven))
        let inside = ix >= 0 && iy >= 0 && ix < src.width && iy < src.height
        for ch in 0..<c {
            out[j * c + ch] =
                inside ? src.base[iy * src.rowStride + ix * src.colStride + ch * src.channelStride].kernelFloat : 0
        }
    }
}
