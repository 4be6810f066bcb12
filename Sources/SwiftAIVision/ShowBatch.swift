import Foundation
import SwiftAICore
import SwiftAIData

extension DataLoaders {
    /// fastai's `show_batch`: a PNG grid of the first `nrows × ncols` images of a training batch (or a validation
    /// one), decoded back to pixels (`Normalize` undone) and titled with their labels.
    public func showBatch(nrows: Int = 3, ncols: Int = 3, to path: String, valid: Bool = false, cell: Int = 180) throws
    {
        let dl = valid ? self.valid : self.train
        let b = dl.batchTransforms.decode(try dl.first())
        let images = imagesForDisplay(b.x)
        let n = Swift.min(nrows * ncols, images.count)
        let titles = (0..<n).map { labelText(b.y, $0) }
        try drawGrid(images.prefix(n).map { $0 }, titles: titles, ncols: ncols, cell: cell, to: path)
    }

    func labelText(_ y: Tensor, _ i: Int) -> String {
        func name(_ k: Int) -> String { k < vocab.count ? vocab[k] : String(k) }
        if y.rank == 1 { return name(Int(y[element: [i]])) }
        return (0..<y.shape[1]).filter { y[element: [i, $0]] > 0.5 }.map(name).joined(separator: ";")
    }
}

/// Batch `[B, C, H, W]` (uint8, or float in [0, 1]) as RGB images.
func imagesForDisplay(_ x: Tensor) -> [Image] {
    require(
        x.rank == 4 && (x.shape[1] == 1 || x.shape[1] == 3), "showBatch: expected images [B, 1|3, H, W], got \(x.shape)"
    )
    let scaled = x.dtype == .uint8 ? x.to(.float32) / 255 : x.to(.float32)
    let hwc = scaled.permute([0, 2, 3, 1]).contiguous()
    let v = hwc.floats
    let (bn, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    return (0..<bn).map { k in
        var px = [UInt8](repeating: 0, count: h * w * 3)
        for p in 0..<(h * w) {
            for ch in 0..<3 {
                let f = v[(k * h * w + p) * c + (c == 1 ? 0 : ch)]
                px[p * 3 + ch] = UInt8(Swift.max(0, Swift.min(255, (f * 255).rounded())))
            }
        }
        return Image(width: w, height: h, channels: 3, pixels: px)
    }
}

/// Draws images in a grid of `cell`-pixel squares with a title above each, and writes a PNG (temp + rename).
func drawGrid(_ images: [Image], titles: [String], ncols: Int, cell: Int, to path: String) throws {
    let cols = Swift.max(1, Swift.min(ncols, images.count)), rows = (images.count + cols - 1) / cols
    let titleH = 22, pad = 8
    let canvas = try Canvas(width: cols * (cell + pad) + pad, height: rows * (cell + titleH + pad) + pad)
    for (i, img) in images.enumerated() {
        let x0 = Double(pad + (i % cols) * (cell + pad)), y0 = Double(pad + (i / cols) * (cell + titleH + pad))
        let s = Double(cell) / Double(Swift.max(img.width, img.height, 1))
        canvas.paint(img, x: x0 + (Double(cell) - Double(img.width) * s) / 2, y: y0 + Double(titleH), scale: s)
        canvas.text(titles[i], x0 + Double(cell) / 2, y0 + Double(titleH) / 2, size: 13)
    }
    try canvas.write(to: path)
}
