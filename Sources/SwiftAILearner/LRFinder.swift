import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// fastai's learning-rate suggestions from an `lrFind` run.
public struct SuggestedLRs: Sendable {
    /// One tenth of the learning rate at the minimum loss.
    public let minimum: Double
    /// Where the loss falls fastest (steepest negative slope against log lr).
    public let steep: Double
    /// Two thirds down the longest valley of the loss curve (fastai's default).
    public let valley: Double
    /// fastai's interval slide rule.
    public let slide: Double
    /// The recorded curve (after fastai's trimming: the first `numIt/10` and last 5 points dropped).
    public let lrs: [Double], losses: [Double]

    /// (name, suggested lr, where to mark it: lr and loss) for plotting. `minimum` is marked at the loss
    /// minimum itself, ten times its suggested value, as fastai draws it.
    public var points: [(name: String, suggestion: Double, lr: Double, loss: Double)] {
        [
            ("minimum", minimum, minimum * 10), ("steep", steep, steep), ("valley", valley, valley),
            ("slide", slide, slide)
        ]
        .map { name, value, at in (name, value, at, SuggestedLRs.interpolate(at, lrs, losses)) }
    }

    static func interpolate(_ lr: Double, _ lrs: [Double], _ losses: [Double]) -> Double {
        guard let first = lrs.first, let last = lrs.last else { return .nan }
        if lr <= first { return losses[0] }
        if lr >= last { return losses[losses.count - 1] }
        let i = lrs.firstIndex { $0 >= lr }!
        let t = (log10(lr) - log10(lrs[i - 1])) / (log10(lrs[i]) - log10(lrs[i - 1]))
        return losses[i - 1] + t * (losses[i] - losses[i - 1])
    }

    /// Computes all four suggestions from a recorded curve (already trimmed).
    public init(lrs: [Double], losses: [Double]) {
        self.lrs = lrs
        self.losses = losses
        let n = losses.count
        guard n >= 2 else {
            minimum = .nan; steep = .nan; valley = .nan; slide = .nan
            return
        }
        let argmin = losses.indices.min { losses[$0] < losses[$1] }!
        minimum = lrs[argmin] / 10
        var grads = [Double](repeating: 0, count: n - 1)
        for i in 0..<(n - 1) {
            let dLoss: Double = losses[i + 1] - losses[i]
            let dLog: Double = Foundation.log(lrs[i + 1]) - Foundation.log(lrs[i])
            grads[i] = dLoss / dLog
        }
        steep = lrs[grads.indices.min { grads[$0] < grads[$1] }!]
        // Longest valley: longest decreasing subsequence ending at each point.
        var lds = [Int](repeating: 1, count: n)
        var maxStart = 0, maxEnd = 0
        for i in 1..<n {
            for j in 0..<i {
                if losses[i] < losses[j] && lds[i] < lds[j] + 1 { lds[i] = lds[j] + 1 }
                if lds[maxEnd] < lds[i] {
                    maxEnd = i
                    maxStart = maxEnd - lds[maxEnd]
                }
            }
        }
        let sections = Double(maxEnd - maxStart) / 3
        valley = lrs[Swift.min(n - 1, Swift.max(0, maxStart + Int(sections) + Int(sections / 2)))]
        // Interval slide rule on the numerical gradient of the loss.
        var lg = [Double](repeating: 0, count: n)
        for i in 0..<n {
            lg[i] =
                i == 0
                ? losses[1] - losses[0]
                : (i == n - 1 ? losses[n - 1] - losses[n - 2] : (losses[i + 1] - losses[i - 1]) / 2)
        }
        let lrDiff = 15, thresh = 0.005
        var r = n - 1, l = r - lrDiff
        var local = lrs[Swift.max(l, 0)]
        while l >= 0 && Swift.abs(lg[r] - lg[l]) > thresh {
            local = lrs[l]
            r -= 1
            l -= 1
        }
        slide = local
    }
}

/// Exponentially growing learning rate with divergence detection (fastai's `LRFinder`).
final class LRFinderCallback: Callback {
    override var order: Int { 55 }
    let startLR: Double, endLR: Double, numIt: Int, stopDiv: Bool
    private var best = Double.infinity

    init(startLR: Double, endLR: Double, numIt: Int, stopDiv: Bool) {
        self.startLR = startLR
        self.endLR = endLR
        self.numIt = Swift.max(numIt, 6)
        self.stopDiv = stopDiv
    }

    override func beforeBatch(_ learn: Learner) {
        guard learn.training else { return }
        let pos = Double(learn.trainIter) / Double(numIt)
        learn.opt!.set(\.lr, startLR * pow(endLR / startLR, pos))
    }

    override func afterBatch(_ learn: Learner) throws {
        guard learn.training else { return }
        let s = learn.recorder.smoothLoss
        if s < best { best = s }
        if stopDiv && (s > 4 * best || s.isNaN) { throw CancelFit() }
        if learn.trainIter >= numIt { throw CancelFit() }
    }

    override func beforeValidate(_ learn: Learner) throws { throw CancelValidate() }
}

extension Learner {
    /// fastai's learning-rate finder: trains with the learning rate growing exponentially from `startLR` to
    /// `endLR` over `numIt` batches, stopping early when the smoothed loss exceeds 4× its minimum. Weights and
    /// optimizer state are restored afterwards. Returns the four suggestions (``SuggestedLRs/valley`` is
    /// fastai's default).
    @discardableResult
    public func lrFind(startLR: Double = 1e-7, endLR: Double = 10, numIt: Int = 100, stopDiv: Bool = true) throws
        -> SuggestedLRs
    {
        let nEpochs = numIt / Swift.max(dls.train.count, 1) + 1
        let progress = callbacks.filter { $0 is ProgressCallback }
        for p in progress { remove(p) }
        defer { for p in progress { add(p) } }
        try preservingState {
            try fit(
                nEpochs, callbacks: [LRFinderCallback(startLR: startLR, endLR: endLR, numIt: numIt, stopDiv: stopDiv)])
        }
        var lrs = recorder.lrs, losses = recorder.losses
        let lo = numIt / 10, hi = Swift.max(lo, lrs.count - 5)
        lrs = Array(lrs[Swift.min(lo, lrs.count)..<hi])
        losses = Array(losses[Swift.min(lo, losses.count)..<hi])
        if let nan = losses.firstIndex(where: { $0.isNaN }) {
            lrs = Array(lrs[..<nan])
            losses = Array(losses[..<nan])
        }
        return SuggestedLRs(lrs: lrs, losses: losses)
    }
}

extension SuggestedLRs {
    /// The loss against the learning rate (log scale) with the suggestions marked.
    public func plot(to path: String) throws {
        var panel = Panel(
            title: "Learning rate finder", xLabel: "Learning Rate", yLabel: "Loss", logX: true,
            series: [Series(x: lrs, y: losses)])
        for (k, p) in points.enumerated() {
            panel.series.append(
                Series(
                    "\(p.name) \(String(format: "%.2e", p.suggestion))", x: [p.lr], y: [p.loss],
                    color: Color.cycle[(k + 1) % Color.cycle.count], points: true))
        }
        try Figure([panel], columns: 1).save(path)
    }
}
