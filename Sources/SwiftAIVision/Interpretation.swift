import CCairo
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner

/// Why a ``ClassificationInterpretation`` could not be built or drawn.
public enum InterpretationError: Error, CustomStringConvertible, Equatable {
    /// Predictions, targets, losses or vocab that do not fit together.
    case mismatch(String)
    /// `plotTopLosses` needs a loader over an ``ImageDataset``.
    case noImages(String)

    public var description: String {
        switch self {
        case .mismatch(let s): return "ClassificationInterpretation: \(s)"
        case .noImages(let s): return "plotTopLosses: \(s)"
        }
    }
}

/// fastai's `ClassificationInterpretation`: the confusion matrix, the most confused pairs of classes and the items
/// with the largest losses, from one pass of predictions over a loader (the validation set by default).
public final class ClassificationInterpretation {
    /// Probabilities `[N, classes]` (the loss's activation), in the loader's item order.
    public let preds: Tensor
    /// Actual class of each item.
    public let targets: [Int]
    /// Each item's loss.
    public let losses: [Double]
    /// Class names, index = class.
    public let vocab: [String]
    /// Predicted class of each item (argmax of ``preds``).
    public let decoded: [Int]
    /// The loader predictions came from (`nil` when built from values), where
    /// ``plotTopLosses(_:to:largest:ncols:cell:)`` finds the images.
    public let dl: DataLoader?
    private lazy var matrix: [[Int]] = {
        var cm = [[Int]](repeating: [Int](repeating: 0, count: vocab.count), count: vocab.count)
        for (t, d) in zip(targets, decoded) { cm[t][d] += 1 }
        return cm
    }()

    /// fastai's `ClassificationInterpretation.from_learner`: predictions, targets and losses of `learn` over `dl`
    /// (default: the validation loader), computed once.
    public convenience init(_ learn: Learner, dl: DataLoader? = nil) throws {
        let loader = dl ?? learn.dls.valid
        let r = try learn.getPreds(loader, withLoss: true)
        try self.init(preds: r.preds, targets: r.targets, losses: r.losses, vocab: learn.dls.vocab, dl: loader)
    }

    /// From values: `preds` `[N, C]`, `targets` `[N]` class indices, `losses` `[N]`; an empty `vocab` names the
    /// classes `"0"`, `"1"`, …
    /// - Throws: ``InterpretationError/mismatch(_:)`` when the shapes, the vocab or a target do not fit.
    public init(preds: Tensor, targets: Tensor, losses: Tensor, vocab: [String], dl: DataLoader? = nil) throws {
        guard preds.rank == 2, preds.shape[1] > 0 else {
            throw InterpretationError.mismatch("predictions must be [items, classes], got \(preds.shape)")
        }
        let (n, c) = (preds.shape[0], preds.shape[1])
        guard targets.rank == 1, targets.shape[0] == n else {
            throw InterpretationError.mismatch(
                "targets \(targets.shape) must be one class index per item for \(n) predictions "
                    + "(multi-label targets are not supported)")
        }
        guard losses.count == n else {
            throw InterpretationError.mismatch("\(losses.count) losses for \(n) predictions")
        }
        guard vocab.isEmpty || vocab.count == c else {
            throw InterpretationError.mismatch("a vocab of \(vocab.count) classes for predictions over \(c) classes")
        }
        let t = targets.scalars(as: Int64.self).map(Int.init)
        if let bad = t.first(where: { !(0..<c).contains($0) }) {
            throw InterpretationError.mismatch("target \(bad) is not a class index in 0..<\(c)")
        }
        self.preds = preds
        self.targets = t
        self.losses = losses.doubles
        self.vocab = vocab.isEmpty ? (0..<c).map(String.init) : vocab
        self.decoded = n == 0 ? [] : preds.argmax(dim: 1).scalars(as: Int64.self).map(Int.init)
        self.dl = dl
    }

    /// Counts of items by actual class (rows) and predicted class (columns), computed once.
    public func confusionMatrix() -> [[Int]] { matrix }

    /// fastai's `most_confused`: off-diagonal cells of the confusion matrix with at least `minVal` items, most
    /// frequent first (ties keep row-major order, as fastai's stable sort).
    public func mostConfused(minVal: Int = 1) -> [(actual: String, predicted: String, count: Int)] {
        var res: [(actual: String, predicted: String, count: Int)] = []
        // As fastai, the diagonal is zeroed rather than skipped (it shows up when `minVal` ≤ 0).
        for (i, row) in matrix.enumerated() {
            for (j, v) in row.enumerated() where (i == j ? 0 : v) >= minVal {
                res.append((vocab[i], vocab[j], i == j ? 0 : v))
            }
        }
        return res.enumerated().sorted { ($0.element.count, $1.offset) > ($1.element.count, $0.offset) }.map(\.element)
    }

    /// fastai's `top_losses`: the `k` largest (or smallest) losses with their item indices, all by default. Ties
    /// keep item order; NaN counts as the largest value, as `torch.topk`.
    public func topLosses(_ k: Int? = nil, largest: Bool = true) -> [(loss: Double, index: Int)] {
        func less(_ a: Double, _ b: Double) -> Bool { a.isNaN || b.isNaN ? (!a.isNaN && b.isNaN) : a < b }
        let order = losses.indices.sorted { i, j in
            let (a, b) = (losses[i], losses[j])
            if less(a, b) || less(b, a) { return largest ? less(b, a) : less(a, b) }
            return i < j
        }
        return order.prefix(Swift.max(0, k ?? losses.count)).map { (losses[$0], $0) }
    }

    /// fastai's `plot_confusion_matrix` as a PNG: 'Blues' colours, class names on both axes (x labels rotated),
    /// each cell's count (or, with `normalize`, its share of the actual class with `normDec` decimals) when
    /// `plotTxt`. The figure grows with the number of classes so 37 classes stay legible.
    public func plotConfusionMatrix(
        to path: String, normalize: Bool = false, title: String = "Confusion matrix",
        normDec: Int = 2, plotTxt: Bool = true
    ) throws {
        let values: [[Double]] = matrix.map { row in
            let sum = Double(row.reduce(0, +))
            return row.map { normalize ? Double($0) / sum : Double($0) }  // 0/0 is NaN, as numpy
        }
        let texts = values.map { row in
            row.map { v in
                v.isNaN ? "nan" : normalize ? String(format: "%.\(Swift.max(0, normDec))f", v) : String(Int(v))
            }
        }
        let widest = plotTxt ? texts.joined().max { $0.count < $1.count } ?? "" : ""
        let layout = try MatrixLayout(vocab: vocab, title: title, widest: widest)
        let canvas = try Canvas(width: layout.width, height: layout.height)
        let cr = canvas.cr
        let n = vocab.count, cell = layout.cell, gl = layout.left, gt = layout.top
        let finite = values.joined().filter(\.isFinite)
        let lo = finite.min() ?? 0, hi = finite.max() ?? 0
        for i in 0..<n {
            for j in 0..<n {
                let v = values[i][j]
                let c = v.isNaN ? Color(1, 1, 1) : Color.blues(hi > lo ? (v - lo) / (hi - lo) : 0)
                cairo_set_source_rgb(cr, c.r, c.g, c.b)
                cairo_rectangle(cr, gl + Double(j) * cell, gt + Double(i) * cell, cell, cell)
                cairo_fill(cr)
            }
        }
        if plotTxt {
            // fastai: white on cells above half the maximum, black elsewhere.
            let size = fittedSize(cr, widest, start: Swift.min(14, cell * 0.42), width: cell - 8)
            for i in 0..<n {
                for j in 0..<n {
                    let white = values[i][j] > hi / 2
                    canvas.text(
                        texts[i][j], gl + (Double(j) + 0.5) * cell, gt + (Double(i) + 0.5) * cell, size: size,
                        gray: white ? 1 : 0)
                }
            }
        }
        let grid = Double(n) * cell
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
        cairo_set_line_width(cr, 1)
        cairo_rectangle(cr, gl - 0.5, gt - 0.5, grid + 1, grid + 1)
        for k in 0..<n {
            let mid = (Double(k) + 0.5) * cell
            cairo_move_to(cr, gl - 0.5, gt + mid); cairo_rel_line_to(cr, -layout.tick, 0)
            cairo_move_to(cr, gl + mid, gt + grid + 0.5); cairo_rel_line_to(cr, 0, layout.tick)
        }
        cairo_stroke(cr)
        for (k, name) in vocab.enumerated() {
            let mid = (Double(k) + 0.5) * cell
            canvas.text(name, gl - layout.tick - 3, gt + mid, size: layout.labelSize, anchor: 1)
            canvas.text(name, gl + mid, gt + grid + layout.tick + 3, size: layout.labelSize, anchor: 1, rotate: true)
        }
        canvas.text(
            title, layout.titleX, MatrixLayout.margin + MatrixLayout.titleSize / 2, size: MatrixLayout.titleSize)
        canvas.text(
            "Actual", MatrixLayout.margin + MatrixLayout.axisSize / 2, gt + grid / 2, size: MatrixLayout.axisSize,
            rotate: true)
        canvas.text(
            "Predicted", gl + grid / 2, Double(layout.height) - MatrixLayout.margin - MatrixLayout.axisSize / 2,
            size: MatrixLayout.axisSize)
        try canvas.write(to: path)
    }

    /// fastai's `plot_top_losses` for images: the `k` items with the largest (or smallest) losses, from the loader's
    /// ``ImageDataset`` after its item transforms in validation mode, each titled `prediction/actual / loss /
    /// probability` (of the predicted class), in a grid of `ncols` columns of `cell`-pixel images.
    /// - Throws: ``InterpretationError/noImages(_:)`` when the loader is not over an ``ImageDataset``;
    ///   ``InterpretationError/mismatch(_:)`` when it no longer has one item per prediction.
    public func plotTopLosses(_ k: Int = 9, to path: String, largest: Bool = true, ncols: Int = 3, cell: Int = 192)
        throws
    {
        guard let dl else {
            throw InterpretationError.noImages("this interpretation was built from values, without a loader")
        }
        guard let ds = dl.dataset as? ImageDataset else {
            throw InterpretationError.noImages("the loader's dataset is a \(type(of: dl.dataset)), not an ImageDataset")
        }
        guard ds.count == losses.count else {
            throw InterpretationError.mismatch(
                "\(losses.count) predictions for \(ds.count) items (were images skipped?)")
        }
        let top = topLosses(k, largest: largest)
        guard !top.isEmpty else {
            throw PlotError(description: "plotTopLosses: no items to show (k = \(k), \(losses.count) items)")
        }
        let probs = preds.doubles, c = vocab.count
        let titles = top.map { l, i in
            let p = probs[i * c..<(i + 1) * c].max()!
            return
                """
                \(vocab[decoded[i]])/\(vocab[targets[i]]) / \(String(format: "%.2f", l)) / \
                \(String(format: "%.2f", p))
                """
        }
        let images = try top.map { try ds.image($0.index, seed: 0, training: false) }
        try drawTitledGrid(
            images, titles: titles, header: "Prediction/Actual/Loss/Probability", ncols: ncols, cell: cell, to: path)
    }
}

extension Color {
    /// matplotlib's 'Blues' colour map for `t` ∈ [0, 1].
    static func blues(_ t: Double) -> Color {
        let stops = [
            Color(0.9686, 0.9843, 1.0), Color(0.8706, 0.9216, 0.9686), Color(0.7765, 0.8588, 0.9373),
            Color(0.6196, 0.7922, 0.8824), Color(0.4196, 0.6824, 0.8392), Color(0.2588, 0.5725, 0.7765),
            Color(0.1294, 0.4431, 0.7098), Color(0.0314, 0.3176, 0.6118), Color(0.0314, 0.1882, 0.4196)
        ]
        let x = Swift.min(Swift.max(t.isNaN ? 0 : t, 0), 1) * Double(stops.count - 1)
        let i = Swift.min(Int(x), stops.count - 2), f = x - Double(i)
        let a = stops[i], b = stops[i + 1]
        return Color(a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f)
    }
}

/// Where the parts of a confusion-matrix figure go: square cells sized by the number of classes (28 to 80 px) and
/// wide enough for the `widest` cell text at 10 px, margins sized by the longest class name.
struct MatrixLayout {
    static let margin = 16.0, titleSize = 16.0, axisSize = 14.0
    let cell: Double, labelSize: Double, tick = 4.0
    /// The grid's top-left corner, the title's centre (over the grid where it fits), and the image size.
    let left: Double, top: Double, titleX: Double, width: Int, height: Int

    init(vocab: [String], title: String, widest: String = "") throws {
        let n = Double(vocab.count)
        let measure = try Canvas(width: 1, height: 1)
        cell = Swift.max(
            (480 / n).rounded(.down).clamped(28, 80), (measure.width(of: widest, size: 10) + 8).rounded(.up))
        let size = Swift.min(13, cell * 0.45)
        labelSize = size
        let longest = vocab.map { measure.width(of: $0, size: size) }.max() ?? 0
        let labels = tick + 3 + longest.rounded(.up)
        left = Self.margin + Self.axisSize + 8 + labels
        top = Self.margin + Self.titleSize + 12
        let grid = n * cell
        let titleW = measure.width(of: title, size: Self.titleSize)
        width = Int(Swift.max(left + grid + Self.margin * 1.5, titleW + 2 * Self.margin).rounded(.up))
        titleX = (left + grid / 2).clamped(Self.margin + titleW / 2, Double(width) - Self.margin - titleW / 2)
        height = Int((top + grid + labels + 8 + Self.axisSize + Self.margin).rounded(.up))
    }
}

extension Double {
    fileprivate func clamped(_ lo: Double, _ hi: Double) -> Double { Swift.min(Swift.max(self, lo), hi) }
}

/// The largest font size up to `start` (and at least 6) at which `s` fits in `width`.
private func fittedSize(_ cr: OpaquePointer, _ s: String, start: Double, width: Double) -> Double {
    cairo_set_font_size(cr, start)
    var ext = cairo_text_extents_t()
    cairo_text_extents(cr, s, &ext)
    return ext.x_advance <= width ? start : Swift.max(6, start * width / ext.x_advance)
}

/// A white RGB Cairo image with DejaVu Sans text, written to PNG through a temporary file and a rename.
final class Canvas {
    let surface: OpaquePointer, cr: OpaquePointer

    init(width: Int, height: Int) throws {
        guard let s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32(width), Int32(height)),
            cairo_surface_status(s) == CAIRO_STATUS_SUCCESS, let c = cairo_create(s)
        else {
            throw PlotError(description: "cannot create a \(width)×\(height) image")
        }
        surface = s
        cr = c
        cairo_set_source_rgb(cr, 1, 1, 1)
        cairo_paint(cr)
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
    }

    deinit {
        cairo_destroy(cr)
        cairo_surface_destroy(surface)
    }

    /// Advance width of `s` at font `size`.
    func width(of s: String, size: Double) -> Double {
        cairo_set_font_size(cr, size)
        var ext = cairo_text_extents_t()
        cairo_text_extents(cr, s, &ext)
        return ext.x_advance
    }

    /// Draws `s` centred vertically on `y`, with `anchor` of its width at `x` (0 left, 0.5 centre, 1 right);
    /// `rotate` turns it a quarter counter-clockwise about (x, y), reading upwards.
    func text(
        _ s: String, _ x: Double, _ y: Double, size: Double, anchor: Double = 0.5, rotate: Bool = false,
        gray: Double = 0.1
    ) {
        cairo_save(cr)
        cairo_set_font_size(cr, size)
        var fe = cairo_font_extents_t()
        cairo_font_extents(cr, &fe)
        cairo_translate(cr, x, y)
        if rotate { cairo_rotate(cr, -Double.pi / 2) }
        cairo_move_to(cr, -width(of: s, size: size) * anchor, (fe.ascent - fe.descent) / 2)
        cairo_set_source_rgb(cr, gray, gray, gray)
        cairo_show_text(cr, s)
        cairo_restore(cr)
    }

    /// Paints `img` (RGB or gray) with its top-left corner at (x, y), scaled by `scale`.
    func paint(_ img: Image, x: Double, y: Double, scale: Double) {
        let stride = Int(cairo_format_stride_for_width(CAIRO_FORMAT_RGB24, Int32(img.width)))
        var argb = [UInt8](repeating: 255, count: stride * img.height)
        for r in 0..<img.height {
            for c in 0..<img.width {
                let o = r * stride + c * 4, p = (r * img.width + c) * img.channels
                let (red, green, blue) =
                    img.channels >= 3
                    ? (img.pixels[p], img.pixels[p + 1], img.pixels[p + 2])
                    : (img.pixels[p], img.pixels[p], img.pixels[p])
                argb[o] = blue; argb[o + 1] = green; argb[o + 2] = red
            }
        }
        argb.withUnsafeMutableBufferPointer { buf in
            guard
                let src = cairo_image_surface_create_for_data(
                    buf.baseAddress, CAIRO_FORMAT_RGB24, Int32(img.width),
                    Int32(img.height), Int32(stride))
            else { return }
            defer { cairo_surface_destroy(src) }
            cairo_save(cr)
            cairo_translate(cr, x, y)
            cairo_scale(cr, scale, scale)
            cairo_set_source_surface(cr, src, 0, 0)
            cairo_paint(cr)
            cairo_restore(cr)
        }
    }

    func write(to path: String) throws {
        cairo_surface_flush(surface)
        let tmp = path + ".tmp-\(getpid()).png"
        guard cairo_surface_write_to_png(surface, tmp) == CAIRO_STATUS_SUCCESS, rename(tmp, path) == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw PlotError(description: "cannot write PNG to \(path): check that the folder exists and is writable")
        }
    }
}

/// The title of a grid cell split into lines and a font size so that it fits `width`: one line at 13 px when it
/// fits, else broken after "prediction/" and before " / loss" (as few lines as keep the font ≥ 10 px).
func fitTitle(_ title: String, width: Double, canvas: Canvas) -> (lines: [String], size: Double) {
    let parts = title.components(separatedBy: " / ")
    let names = parts[0]
    var candidates = [[title]]
    if parts.count > 1 {
        let rest = parts.dropFirst().joined(separator: " / ")
        candidates.append([names, rest])
        if let slash = names.firstIndex(of: "/") {
            candidates.append([String(names[...slash]), String(names[names.index(after: slash)...]), rest])
        }
    }
    var best = (lines: [title], size: 0.0)
    for lines in candidates {
        let widest = lines.map { canvas.width(of: $0, size: 13) }.max()!
        let size = Swift.min(13, 13 * width / widest)
        if size >= 10 { return (lines, size) }
        if size > best.size { best = (lines, size) }
    }
    return (best.lines, Swift.max(best.size, 6))
}

/// Images in a grid of `cell`-pixel squares under a `header`, each with its (fitted) title above it.
func drawTitledGrid(_ images: [Image], titles: [String], header: String, ncols: Int, cell: Int, to path: String) throws
{
    let cols = Swift.max(1, Swift.min(ncols, images.count)), rows = (images.count + cols - 1) / cols
    let pad = 8.0, headerH = 30.0, lineH = 16.0, side = Double(cell)
    let measure = try Canvas(width: 1, height: 1)
    let fitted = titles.map { fitTitle($0, width: side, canvas: measure) }
    let titleH = Double(fitted.map(\.lines.count).max() ?? 1) * lineH + 4
    let w = Int(Double(cols) * (side + pad) + pad), h = Int(headerH + Double(rows) * (side + titleH + pad) + pad)
    let canvas = try Canvas(width: w, height: h)
    canvas.text(header, Double(w) / 2, headerH / 2 + 4, size: 15)
    for (i, img) in images.enumerated() {
        let x0 = pad + Double(i % cols) * (side + pad), y0 = headerH + pad + Double(i / cols) * (side + titleH + pad)
        let (lines, size) = fitted[i]
        for (k, line) in lines.enumerated() {
            canvas.text(line, x0 + side / 2, y0 + titleH - 2 - (Double(lines.count - k) - 0.5) * lineH, size: size)
        }
        let s = side / Double(Swift.max(img.width, img.height, 1))
        canvas.paint(
            img, x: x0 + (side - Double(img.width) * s) / 2, y: y0 + titleH + (side - Double(img.height) * s) / 2,
            scale: s)
    }
    try canvas.write(to: path)
}
