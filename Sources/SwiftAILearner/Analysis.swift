import Foundation
import SwiftAICore
import SwiftAINN

// The lesson's model summary, activation statistics, history plots and advice.

/// One row of ``Learner/summary()``.
public struct SummaryRow: Sendable {
    public let module: String
    public let input: [Int], output: [Int]
    public let params: Int
    public let mflops: Double
}

/// The lesson's `summary` table with totals.
public struct ModelSummary: Sendable, CustomStringConvertible {
    public let rows: [SummaryRow]
    public var totalParams: Int { rows.reduce(0) { $0 + $1.params } }
    public var totalMFLOPs: Double { rows.reduce(0) { $0 + $1.mflops } }

    public var description: String {
        var s = "|Module|Input|Output|Num params|MFLOPS|\n|--|--|--|--|--|\n"
        for r in rows {
            s += "|\(r.module)|\(r.input)|\(r.output)|\(r.params)|\(String(format: "%.1f", r.mflops))|\n"
        }
        return s + "Tot params: \(totalParams); MFLOPS: \(String(format: "%.1f", totalMFLOPs))"
    }
}

extension Learner {
    /// The lesson's summary: runs one training batch with a hook on each top-level module and lists its type,
    /// input and output shapes, parameter count and MFLOPs (per item: weights with 4 dimensions count
    /// `numel·h·w` of the output map, others `numel`). Weights and optimizer state are restored.
    public func summary() throws -> ModelSummary {
        var rows: [SummaryRow] = []
        let children = model.namedChildren.map(\.1)
        let targets = children.isEmpty ? [model] : children
        let hooks = targets.map { m in
            m.registerForwardHook { mod, input, output in
                guard mod.training else { return }  // the one-batch check before fitting runs in evaluation mode
                let params = mod.parameters().reduce(0) { $0 + $1.value.count }
                let h = output.rank >= 2 ? output.shape[output.rank - 2] : 1,
                    w = output.rank >= 2 ? output.shape[output.rank - 1] : 1
                let flops =
                    mod.parameters().reduce(0.0) { acc, p in
                        acc + Double(p.value.rank == 4 ? p.value.count * h * w : p.value.count)
                    } / 1e6
                rows.append(
                    SummaryRow(
                        module: String(describing: type(of: mod)), input: input.shape, output: output.shape,
                        params: params, mflops: flops))
            }
        }
        defer { hooks.forEach { $0.remove() } }
        let quiet = callbacks.filter { $0 is ProgressCallback }
        for q in quiet { remove(q) }
        defer { for q in quiet { add(q) } }
        try preservingState {
            try fit(1, lr: 1e-9, valid: false, callbacks: [SingleBatch()])
        }
        return ModelSummary(rows: rows)
    }
}

/// The lesson's `ActivationStats`: for each hooked module, per training batch, the mean and standard
/// deviation of its output and a 40-bin histogram of |activation| over [0, 10] — the "colorful dimension".
public final class ActivationStats: Callback {
    public struct Stats {
        public var means: [Double] = [], stds: [Double] = []
        /// One 40-bin histogram per batch.
        public var histograms: [[Double]] = []
        /// Fraction of activations in the lowest bin (|a| < 0.25) per batch.
        public var nearZero: [Double] { histograms.map { h in (h.first ?? 0) / Swift.max(h.reduce(0, +), 1) } }
    }

    public private(set) var stats: [Stats] = []
    public private(set) var names: [String] = []
    let filter: (Module) -> Bool
    private var hooks: [HookHandle] = []

    /// - Parameter filter: which modules to watch (default: activation modules, as the lesson's `GeneralRelu`).
    public init(filter: @escaping (Module) -> Bool = { $0 is ActivationModule }) { self.filter = filter }

    public override func beforeFit(_ learn: Learner) {
        let mods = learn.model.namedModules().filter { filter($0.1) }
        names = mods.map { $0.0.isEmpty ? String(describing: type(of: $0.1)) : $0.0 }
        stats = Array(repeating: Stats(), count: mods.count)
        hooks = mods.enumerated().map { i, m in
            m.1.registerForwardHook { [weak self, unowned learn] _, _, out in
                guard let self, learn.training else { return }
                self.record(i, out)
            }
        }
    }

    private func record(_ i: Int, _ out: Tensor) {
        let a = out.detached()
        stats[i].means.append(a.mean().item())
        stats[i].stds.append(a.std().item())
        stats[i].histograms.append(a.abs().histogram(bins: 40, min: 0, max: 10).doubles)
    }

    public override func cleanupFit(_ learn: Learner) {
        hooks.forEach { $0.remove() }
        hooks = []
    }

    /// Means and standard deviations per layer over training (the lesson's `plot_stats`).
    public func plotStats(to path: String) throws {
        let means = Panel(
            title: "Means", xLabel: "batch",
            series: stats.enumerated().map { Series(names[$0.offset], y: $0.element.means) })
        let stds = Panel(
            title: "Stdevs", xLabel: "batch",
            series: stats.enumerated().map { Series(names[$0.offset], y: $0.element.stds) })
        try Figure([means, stds], columns: 2).save(path)
    }

    /// One heat map per layer: histogram bins (up) over batches (right), log(1 + count) (`color_dim`).
    public func colorDim(to path: String) throws {
        let panels = stats.enumerated().map { i, s -> Panel in
            let bins = s.histograms.first?.count ?? 0
            let grid = (0..<bins).map { b in s.histograms.map { log1p($0[b]) } }
            return Panel(title: names[i], heatmap: grid)
        }
        try Figure(panels, columns: Swift.min(3, Swift.max(panels.count, 1))).save(path)
    }

    /// Fraction of near-zero activations per layer over training (`dead_chart`).
    public func deadChart(to path: String) throws {
        let panels = stats.enumerated().map {
            Panel(title: names[$0.offset], yRange: 0...1, series: [Series(y: $0.element.nearZero)])
        }
        try Figure(panels, columns: Swift.min(3, Swift.max(panels.count, 1))).save(path)
    }
}

extension Recorder {
    /// Training loss per batch (smoothed) and validation loss at the end of each epoch.
    public func plotLoss(to path: String) throws {
        var series = [Series("train", y: losses)]
        let perEpoch = values.isEmpty ? 0 : losses.count / values.count
        let valid = validLosses
        if !valid.isEmpty && valid.contains(where: { !$0.isNaN }) {
            series.append(Series("valid", x: valid.indices.map { Double(($0 + 1) * perEpoch - 1) }, y: valid))
        }
        try Figure([Panel(title: "Loss", xLabel: "iteration", yLabel: "loss", series: series)], columns: 1).save(path)
    }

    /// Learning rate and momentum per batch.
    public func plotSchedule(to path: String) throws {
        try Figure(
            [
                Panel(title: "Learning rate", xLabel: "iteration", series: [Series(y: lrs)]),
                Panel(title: "Momentum", xLabel: "iteration", series: [Series(y: moms)])
            ], columns: 2
        ).save(path)
    }

    /// One or two sentences on what the history shows (overfitting, not learning, divergence), or `nil`.
    public func advice(classes: Int? = nil, stopReason: String? = nil) -> String? {
        Advice.read(
            train: trainLosses, valid: validLosses, firstBatchLoss: rawLosses.first, classes: classes,
            stopReason: stopReason)
    }
}

/// Reads a training history the way the chat seed's questions do.
public enum Advice {
    /// Advice from per-epoch training and validation losses, or `nil` when nothing stands out.
    public static func read(
        train allTrain: [Double], valid allValid: [Double], firstBatchLoss: Double?, classes: Int?,
        stopReason: String?
    ) -> String? {
        if let r = stopReason, r.contains("nan") || r.contains("NaN") || r.contains("non-finite") || r.contains("inf") {
            return
                """
                The loss diverged: the learning rate is too high for this model. Run `swiftai lr-find` and use its \
                valley suggestion (or a third of your current rate).
                """
        }
        let train = allTrain.filter { !$0.isNaN }, valid = allValid.filter { !$0.isNaN }
        if let c = classes, let last = train.last,
            Swift.abs(last - Foundation.log(Double(c))) < 0.05 * Foundation.log(Double(c))
        {
            return String(
                format:
                    """
                    The training loss is stuck near ln(%d) = %.2f: the model is guessing. Check the learning rate with \
                    `swiftai lr-find`, the labels, and that the inputs are normalised.
                    """,
                c, Foundation.log(Double(c)))
        }
        if let first = firstBatchLoss, let last = train.last, last > first * 1.5 {
            return
                """
                The training loss rose from \(String(format: "%.3f", first)) to \(String(format: "%.3f", last)): the \
                learning rate is probably too high; try `swiftai lr-find`.
                """
        }
        if valid.count >= 3, train.count == valid.count {
            let n = valid.count
            let trainFalling = train[n - 1] < train[n - 3]
            if valid[n - 1] > valid[n - 2] && valid[n - 2] > valid[n - 3] && trainFalling {
                return
                    """
                    The validation loss rose over the last epochs while the training loss kept falling: the model is \
                    overfitting. Train fewer epochs, add data augmentation or dropout, or use a smaller model.
                    """
            }
            if let best = valid.min(), valid[n - 1] > best * 1.1 && trainFalling {
                return
                    """
                    The validation loss is \(String(format: "%.0f", 100 * (valid[n - 1] / best - 1)))% above its best \
                    while the training loss falls: early signs of overfitting; fewer epochs or augmentation would \
                    help.
                    """
            }
        }
        if let lt = train.last, let lv = valid.last {
            if lv < lt * 1.2 {
                return
                    """
                    Training and validation losses are close (\(String(format: "%.3f", lt)) vs \
                    \(String(format: "%.3f", lv))): the model is not overfitting; more epochs or a larger model may \
                    still help.
                    """
            }
            if valid.count < 3 {
                return
                    """
                    The validation loss (\(String(format: "%.3f", lv))) is above the training loss \
                    (\(String(format: "%.3f", lt))) after only \(valid.count) epoch\(valid.count == 1 ? "" : "s"): too \
                    early to call overfitting; train longer and watch whether valid_loss keeps falling.
                    """
            }
        }
        return nil
    }
}
