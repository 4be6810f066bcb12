import CCairo
import Foundation

/// An RGB colour in [0, 1].
public struct Color: Sendable {
    public var r, g, b: Double
    public init(_ r: Double, _ g: Double, _ b: Double) { self.r = r; self.g = g; self.b = b }

    /// matplotlib's `tab10` cycle.
    public static let cycle: [Color] = [
        Color(0.12, 0.47, 0.71), Color(1.0, 0.50, 0.05), Color(0.17, 0.63, 0.17), Color(0.84, 0.15, 0.16),
        Color(0.58, 0.40, 0.74), Color(0.55, 0.34, 0.29), Color(0.89, 0.47, 0.76), Color(0.50, 0.50, 0.50),
        Color(0.74, 0.74, 0.13), Color(0.09, 0.75, 0.81)
    ]

    /// A viridis-like colour for `t` ∈ [0, 1].
    public static func viridis(_ t: Double) -> Color {
        let stops: [Color] = [
            Color(0.267, 0.005, 0.329), Color(0.283, 0.141, 0.458), Color(0.254, 0.265, 0.530),
            Color(0.207, 0.372, 0.553), Color(0.164, 0.471, 0.558), Color(0.128, 0.567, 0.551),
            Color(0.135, 0.659, 0.518), Color(0.267, 0.749, 0.441), Color(0.478, 0.821, 0.318),
            Color(0.741, 0.873, 0.150), Color(0.993, 0.906, 0.144)
        ]
        let x = Swift.min(Swift.max(t.isNaN ? 0 : t, 0), 1) * Double(stops.count - 1)
        let i = Swift.min(Int(x), stops.count - 2), f = x - Double(i)
        let a = stops[i], b = stops[i + 1]
        return Color(a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f)
    }
}

/// A line (or points) on a panel.
public struct Series {
    public var name: String?
    public var x: [Double], y: [Double]
    public var color: Color?
    public var points = false

    public init(_ name: String? = nil, x: [Double]? = nil, y: [Double], color: Color? = nil, points: Bool = false) {
        self.name = name
        self.x = x ?? y.indices.map(Double.init)
        self.y = y
        self.color = color
        self.points = points
    }
}

/// One set of axes.
public struct Panel {
    public var title = "", xLabel = "", yLabel = ""
    public var logX = false
    public var yRange: ClosedRange<Double>?
    public var series: [Series] = []
    /// A grid shown as an image: `heatmap[row][column]`, row 0 at the bottom (matplotlib's `origin='lower'`).
    public var heatmap: [[Double]]?

    public init(
        title: String = "", xLabel: String = "", yLabel: String = "", logX: Bool = false,
        yRange: ClosedRange<Double>? = nil, series: [Series] = [], heatmap: [[Double]]? = nil
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.logX = logX
        self.yRange = yRange
        self.series = series
        self.heatmap = heatmap
    }
}

/// Why a plot could not be written.
public struct PlotError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A grid of panels rendered to PNG with Cairo.
public struct Figure {
    public var panels: [Panel]
    public var columns: Int
    public var panelWidth = 480.0, panelHeight = 340.0

    public init(_ panels: [Panel], columns: Int? = nil) {
        self.panels = panels
        self.columns = Swift.max(1, columns ?? Swift.min(panels.count, 2))
    }

    /// Renders and writes a PNG (through a temporary file and a rename).
    public func save(_ path: String) throws {
        let rows = (panels.count + columns - 1) / columns
        let w = Int(panelWidth) * columns, h = Int(panelHeight) * rows
        guard let surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32(w), Int32(h)) else {
            throw PlotError(description: "cannot create a \(w)×\(h) image")
        }
        defer { cairo_surface_destroy(surface) }
        let cr = cairo_create(surface)!
        defer { cairo_destroy(cr) }
        cairo_set_source_rgb(cr, 1, 1, 1)
        cairo_paint(cr)
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
        for (i, p) in panels.enumerated() {
            draw(p, cr, x0: Double(i % columns) * panelWidth, y0: Double(i / columns) * panelHeight)
        }
        let tmp = path + ".tmp-\(getpid()).png"
        guard cairo_surface_write_to_png(surface, tmp) == CAIRO_STATUS_SUCCESS, rename(tmp, path) == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw PlotError(description: "cannot write PNG to \(path)")
        }
    }

    private func draw(_ p: Panel, _ cr: OpaquePointer, x0: Double, y0: Double) {
        let left = x0 + 62, right = x0 + panelWidth - 14, top = y0 + 30, bottom = y0 + panelHeight - 46
        func text(_ s: String, _ x: Double, _ y: Double, size: Double = 11, anchor: Double = 0.5, rotate: Bool = false)
        {
            cairo_save(cr)
            cairo_set_font_size(cr, size)
            var ext = cairo_text_extents_t()
            cairo_text_extents(cr, s, &ext)
            cairo_move_to(cr, x, y)
            if rotate { cairo_rotate(cr, -Double.pi / 2) }
            cairo_rel_move_to(cr, -ext.width * anchor, ext.height / 2)
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
            cairo_show_text(cr, s)
            cairo_restore(cr)
        }
        text(p.title, (left + right) / 2, y0 + 14, size: 13)
        text(p.xLabel, (left + right) / 2, bottom + 34)
        text(p.yLabel, x0 + 14, (top + bottom) / 2, rotate: true)

        if let grid = p.heatmap, let cols = grid.first?.count, cols > 0 {
            let vals = grid.flatMap { $0 }.filter { $0.isFinite }
            let lo = vals.min() ?? 0, hi = vals.max() ?? 1
            let cw = (right - left) / Double(cols), ch = (bottom - top) / Double(grid.count)
            for (r, row) in grid.enumerated() {
                for (c, v) in row.enumerated() {
                    let col = Color.viridis(hi > lo ? (v - lo) / (hi - lo) : 0)
                    cairo_set_source_rgb(cr, col.r, col.g, col.b)
                    cairo_rectangle(cr, left + Double(c) * cw, bottom - Double(r + 1) * ch, cw + 0.5, ch + 0.5)
                    cairo_fill(cr)
                }
            }
            frame(cr, left, top, right, bottom)
            return
        }

        let xs = p.series.flatMap { $0.x }.map { p.logX ? log10(Swift.max($0, 1e-300)) : $0 }.filter { $0.isFinite }
        let ys = p.series.flatMap { $0.y }.filter { $0.isFinite }
        var xr = (xs.min() ?? 0, xs.max() ?? 1),
            yr = p.yRange.map { ($0.lowerBound, $0.upperBound) } ?? (ys.min() ?? 0, ys.max() ?? 1)
        if xr.1 <= xr.0 { xr = (xr.0 - 0.5, xr.0 + 0.5) }
        if yr.1 <= yr.0 { yr = (yr.0 - 0.5, yr.0 + 0.5) }
        if p.yRange == nil { let pad = (yr.1 - yr.0) * 0.05; yr = (yr.0 - pad, yr.1 + pad) }
        func px(_ x: Double) -> Double {
            left + ((p.logX ? log10(Swift.max(x, 1e-300)) : x) - xr.0) / (xr.1 - xr.0) * (right - left)
        }
        func py(_ y: Double) -> Double { bottom - (y - yr.0) / (yr.1 - yr.0) * (bottom - top) }

        cairo_set_line_width(cr, 1)
        for t in ticks(yr.0, yr.1) {
            cairo_set_source_rgb(cr, 0.92, 0.92, 0.92)
            cairo_move_to(cr, left, py(t)); cairo_line_to(cr, right, py(t)); cairo_stroke(cr)
            text(label(t), left - 6, py(t), size: 10, anchor: 1)
        }
        let xt =
            p.logX
            ? Array(Int(xr.0.rounded(.up))...Swift.max(Int(xr.0.rounded(.up)), Int(xr.1.rounded(.down)))).map(
                Double.init)
            : ticks(xr.0, xr.1)
        for t in xt {
            let x = p.logX ? left + (t - xr.0) / (xr.1 - xr.0) * (right - left) : px(t)
            cairo_set_source_rgb(cr, 0.92, 0.92, 0.92)
            cairo_move_to(cr, x, top); cairo_line_to(cr, x, bottom); cairo_stroke(cr)
            text(p.logX ? "1e\(Int(t))" : label(t), x, bottom + 14, size: 10)
        }
        frame(cr, left, top, right, bottom)

        cairo_save(cr)
        cairo_rectangle(cr, left, top, right - left, bottom - top)
        cairo_clip(cr)
        var legend: [(String, Color, Bool)] = []
        for (i, s) in p.series.enumerated() {
            let c = s.color ?? Color.cycle[i % Color.cycle.count]
            cairo_set_source_rgb(cr, c.r, c.g, c.b)
            if s.points {
                for (x, y) in zip(s.x, s.y) where y.isFinite {
                    cairo_arc(cr, px(x), py(y), 4.5, 0, 2 * Double.pi)
                    cairo_fill(cr)
                }
            } else {
                cairo_set_line_width(cr, 1.8)
                var started = false
                for (x, y) in zip(s.x, s.y) {
                    guard y.isFinite else { started = false; continue }
                    if started {
                        cairo_line_to(cr, px(x), py(y))
                    } else {
                        cairo_move_to(cr, px(x), py(y)); started = true
                    }
                }
                cairo_stroke(cr)
            }
            if let n = s.name { legend.append((n, c, s.points)) }
        }
        cairo_restore(cr)
        for (k, item) in legend.enumerated() {
            let ly = top + 12 + Double(k) * 16, lx = right - 130
            cairo_set_source_rgb(cr, item.1.r, item.1.g, item.1.b)
            if item.2 {
                cairo_arc(cr, lx + 9, ly, 4, 0, 2 * Double.pi); cairo_fill(cr)
            } else {
                cairo_set_line_width(cr, 2); cairo_move_to(cr, lx, ly); cairo_line_to(cr, lx + 18, ly); cairo_stroke(cr)
            }
            text(item.0, lx + 24, ly, size: 10, anchor: 0)
        }
    }

    private func frame(_ cr: OpaquePointer, _ l: Double, _ t: Double, _ r: Double, _ b: Double) {
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2)
        cairo_set_line_width(cr, 1)
        cairo_rectangle(cr, l, t, r - l, b - t)
        cairo_stroke(cr)
    }

    /// About five round tick values spanning [lo, hi].
    func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let raw = (hi - lo) / 5
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var t = (lo / step).rounded(.up) * step
        var out: [Double] = []
        while t <= hi + step * 1e-9 && out.count < 20 { out.append(t); t += step }
        return out
    }

    func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1e4 || abs(v) < 1e-3 { return String(format: "%.0e", v) }
        return String(format: "%g", (v * 1e6).rounded() / 1e6)
    }
}
