import CCairo
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner

extension DataLoaders {
    /// fastai's `show_batch`: a PNG grid of the first `nrows × ncols` images of a training batch (or a validation
    /// one), decoded back to pixels (`Normalize` undone) and titled with their labels.
    public func showBatch(nrows: Int = 3, ncols: Int = 3, to path: String, valid: Bool = false, cell: Int = 180) throws {
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
    require(x.rank == 4 && (x.shape[1] == 1 || x.shape[1] == 3), "showBatch: expected images [B, 1|3, H, W], got \(x.shape)")
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
    let w = cols * (cell + pad) + pad, h = rows * (cell + titleH + pad) + pad
    guard let surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32(w), Int32(h)), let cr = cairo_create(surface) else {
        throw PlotError(description: "cannot create a \(w)×\(h) image")
    }
    defer { cairo_destroy(cr); cairo_surface_destroy(surface) }
    cairo_set_source_rgb(cr, 1, 1, 1)
    cairo_paint(cr)
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
    cairo_set_font_size(cr, 13)
    for (i, img) in images.enumerated() {
        let x0 = Double(pad + (i % cols) * (cell + pad)), y0 = Double(pad + (i / cols) * (cell + titleH + pad))
        let stride = Int(cairo_format_stride_for_width(CAIRO_FORMAT_RGB24, Int32(img.width)))
        var argb = [UInt8](repeating: 0, count: stride * img.height)
        for y in 0..<img.height {
            for x in 0..<img.width {
                let o = y * stride + x * 4, p = (y * img.width + x) * 3
                argb[o] = img.pixels[p + 2]; argb[o + 1] = img.pixels[p + 1]; argb[o + 2] = img.pixels[p]; argb[o + 3] = 255
            }
        }
        argb.withUnsafeMutableBufferPointer { buf in
            guard let src = cairo_image_surface_create_for_data(buf.baseAddress, CAIRO_FORMAT_RGB24, Int32(img.width),
                                                                Int32(img.height), Int32(stride)) else { return }
            defer { cairo_surface_destroy(src) }
            let s = Double(cell) / Double(Swift.max(img.width, img.height))
            cairo_save(cr)
            cairo_translate(cr, x0 + (Double(cell) - Double(img.width) * s) / 2, y0 + Double(titleH))
            cairo_scale(cr, s, s)
            cairo_set_source_surface(cr, src, 0, 0)
            cairo_paint(cr)
            cairo_restore(cr)
        }
        var ext = cairo_text_extents_t()
        let title = titles[i]
        cairo_text_extents(cr, title, &ext)
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
        cairo_move_to(cr, x0 + (Double(cell) - ext.width) / 2, y0 + 15)
        cairo_show_text(cr, title)
    }
    let tmp = path + ".tmp-\(getpid()).png"
    guard cairo_surface_write_to_png(surface, tmp) == CAIRO_STATUS_SUCCESS, rename(tmp, path) == 0 else {
        try? FileManager.default.removeItem(atPath: tmp)
        throw PlotError(description: "cannot write PNG to \(path): check that the folder exists and is writable")
    }
}
