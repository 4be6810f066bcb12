import SwiftAICore

// Lesson 18's batch augmentations (fastai course part 2, miniai): float [B, C, H, W] batches of any size and layout,
// training batches only. Each item draws its own crop offset, flip and patches (miniai draws once per batch); the
// result keeps the input's memory format (channels-last stays channels-last).

/// Pads each item by `padding` zeros on every side and crops back to its size at a random offset (torchvision's
/// `RandomCrop(size, padding=p)` as lesson 18 uses it).
public struct RandomCrop: BatchTransform {
    public var order: Int
    public var padding: Int

    public init(padding: Int = 1, order: Int = 30) {
        require(padding >= 0, "RandomCrop: padding \(padding) must be non-negative")
        self.padding = padding
        self.order = order
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        guard training else { return batch }
        let shifts = (0..<batch.x.shape[0]).map { _ in
            (
                dy: generator.nextInt(in: 0..<(2 * padding + 1)) - padding,
                dx: generator.nextInt(in: 0..<(2 * padding + 1)) - padding
            )
        }
        return (remap(batch.x, "RandomCrop") { b, y, x in (y + shifts[b].dy, x + shifts[b].dx) }, batch.y)
    }
}

/// Mirrors each item left–right with probability `p` (torchvision's `RandomHorizontalFlip`).
public struct RandomFlip: BatchTransform {
    public var order: Int
    public var p: Double

    public init(p: Double = 0.5, order: Int = 30) {
        self.p = p
        self.order = order
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        guard training else { return batch }
        let flips = (0..<batch.x.shape[0]).map { _ in generator.nextDouble() < p }
        let w = batch.x.rank == 4 ? batch.x.shape[3] : 0
        return (remap(batch.x, "RandomFlip") { b, y, x in (y, flips[b] ? w - 1 - x : x) }, batch.y)
    }
}

/// Replaces up to `maxNum` patches of each item (`pct` of its height and width, count uniform in `0...maxNum`) with
/// normal noise of the batch's mean and standard deviation, clamped to the batch's range (miniai's `RandErase`).
public struct RandErase: BatchTransform {
    public var order: Int
    public var patches: PatchCount

    public init(pct: Double = 0.2, maxNum: Int = 4, order: Int = 100) {
        patches = PatchCount(pct: pct, maxNum: maxNum, "RandErase")
        self.order = order
    }

    public func apply(_ batch: Batch, generator g: Generator, training: Bool) -> Batch {
        guard training else { return batch }
        let x = batch.x
        let out = copyKeepingLayout(x, "RandErase")
        let mean = x.mean().item(), std = x.std().item()
        let lo = Float(x.min().item()), hi = Float(x.max().item())
        let p = out.pointer(Float.self), st = out.strides
        patches.forEach(x.shape, g) { b in
            let r = patch(x.shape, patches.pct, g)
            for c in 0..<x.shape[1] {
                for y in r.y..<(r.y + r.height) {
                    for xx in r.x..<(r.x + r.width) {
                        let v = Float(mean + std * g.nextNormal())
                        p[b * st[0] + c * st[1] + y * st[2] + xx * st[3]] = Swift.min(Swift.max(v, lo), hi)
                    }
                }
            }
        }
        return (out, batch.y)
    }
}

/// Copies up to `maxNum` random patches of each item (`pct` of its height and width, count uniform in `0...maxNum`)
/// over other random places of the same item (miniai's `RandCopy`).
public struct RandCopy: BatchTransform {
    public var order: Int
    public var patches: PatchCount

    public init(pct: Double = 0.2, maxNum: Int = 4, order: Int = 100) {
        patches = PatchCount(pct: pct, maxNum: maxNum, "RandCopy")
        self.order = order
    }

    public func apply(_ batch: Batch, generator g: Generator, training: Bool) -> Batch {
        guard training else { return batch }
        let x = batch.x
        let out = copyKeepingLayout(x, "RandCopy")
        let p = out.pointer(Float.self), st = out.strides
        patches.forEach(x.shape, g) { b in
            let to = patch(x.shape, patches.pct, g), from = patch(x.shape, patches.pct, g)
            for c in 0..<x.shape[1] {
                var values: [Float] = []  // read the whole source patch first: the two may overlap
                for y in 0..<from.height {
                    for xx in 0..<from.width {
                        values.append(p[b * st[0] + c * st[1] + (from.y + y) * st[2] + (from.x + xx) * st[3]])
                    }
                }
                for y in 0..<to.height {
                    for xx in 0..<to.width {
                        p[b * st[0] + c * st[1] + (to.y + y) * st[2] + (to.x + xx) * st[3]] = values[y * to.width + xx]
                    }
                }
            }
        }
        return (out, batch.y)
    }
}

/// How many patches of which size ``RandErase`` and ``RandCopy`` draw per item.
public struct PatchCount: Sendable {
    /// Patch height and width as a share of the item's.
    public var pct: Double
    /// Most patches per item (the count is uniform in `0...maxNum`).
    public var maxNum: Int

    init(pct: Double, maxNum: Int, _ op: String) {
        require(
            pct > 0 && pct < 1 && maxNum >= 0, "\(op): pct \(pct) must be in (0, 1) and maxNum \(maxNum) non-negative")
        self.pct = pct
        self.maxNum = maxNum
    }

    /// Calls `body` with each item's index once per patch drawn for it.
    func forEach(_ shape: [Int], _ g: Generator, _ body: (Int) -> Void) {
        for b in 0..<shape[0] {
            for _ in 0..<g.nextInt(in: 0..<(maxNum + 1)) { body(b) }
        }
    }
}

/// miniai's patch: `int(pct·size)` long, starting at `int(random()·(1-pct)·size)`, rows then columns.
private func patch(_ shape: [Int], _ pct: Double, _ g: Generator) -> (y: Int, x: Int, height: Int, width: Int) {
    let h = shape[2], w = shape[3]
    let y = Int(g.nextDouble() * (1 - pct) * Double(h)), x = Int(g.nextDouble() * (1 - pct) * Double(w))
    return (y, x, Int(pct * Double(h)), Int(pct * Double(w)))
}

/// Checks a float [B, C, H, W] batch and allocates an output in its memory format.
private func output(like x: Tensor, _ op: String) -> Tensor {
    require(
        x.rank == 4 && x.dtype == .float32, "\(op): expects a float32 [B, C, H, W] batch, got \(x.dtype) \(x.shape)")
    return Tensor.uninitialized(x.shape, dtype: .float32, channelsLast: x.isChannelsLast && !x.isContiguous)
}

/// `out[b, c, y, x] = x[b, c, source(b, y, x)]`, zero where the source falls outside the item.
private func remap(_ x: Tensor, _ op: String, _ source: (Int, Int, Int) -> (Int, Int)) -> Tensor {
    let out = output(like: x, op)
    let (h, w) = (x.shape[2], x.shape[3])
    let ip = x.pointer(Float.self), op = out.pointer(Float.self), si = x.strides, so = out.strides
    for b in 0..<x.shape[0] {
        for y in 0..<h {
            for xx in 0..<w {
                let (sy, sx) = source(b, y, xx)
                let inside = sy >= 0 && sy < h && sx >= 0 && sx < w
                for c in 0..<x.shape[1] {
                    op[b * so[0] + c * so[1] + y * so[2] + xx * so[3]] =
                        inside ? ip[b * si[0] + c * si[1] + sy * si[2] + sx * si[3]] : 0
                }
            }
        }
    }
    return out
}

private func copyKeepingLayout(_ x: Tensor, _ op: String) -> Tensor { remap(x, op) { _, y, xx in (y, xx) } }
