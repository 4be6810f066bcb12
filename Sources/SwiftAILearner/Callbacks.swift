import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// A validation metric, averaged over the validation set weighted by batch size (fastai's `AvgMetric`).
public struct Metric {
    public let name: String
    public let fn: (_ preds: Tensor, _ targets: Tensor) -> Double

    public init(_ name: String, _ fn: @escaping (Tensor, Tensor) -> Double) {
        self.name = name
        self.fn = fn
    }

    /// Fraction of items whose highest-scoring class is the target.
    public static let accuracy = Metric("accuracy") { p, y in (p.argmax(dim: -1) .== y).to(.float64).mean().item() }
    /// 1 − accuracy.
    public static let errorRate = Metric("error_rate") { p, y in
        1 - (p.argmax(dim: -1) .== y).to(.float64).mean().item()
    }
}

/// Records the training history: per batch the (smoothed) loss, learning rate and momentum; per epoch the
/// training loss, validation loss and metrics (the rows of the results table). Always installed.
public final class Recorder: Callback {
    public override var order: Int { 50 }
    public let metrics: [Metric]
    /// Exponentially weighted, debiased moving average of the training loss (fastai's `AvgSmoothLoss`, β = 0.98).
    public let beta = 0.98

    /// Per training batch of the last fit.
    public private(set) var losses: [Double] = [], rawLosses: [Double] = [], lrs: [Double] = [], moms: [Double] = []
    /// Per epoch of the last fit: `[train_loss, valid_loss, metrics…]` (NaN where not computed).
    public private(set) var values: [[Double]] = []
    /// Seconds per epoch (training + validation) and seconds spent in training passes only (a pass cut short by
    /// ``CancelFit`` included).
    public private(set) var epochTimes: [Double] = [], trainTimes: [Double] = []
    /// Training items seen in the last fit.
    public private(set) var trainItems = 0
    /// Validation-pass loss per epoch, mean over items (also in ``values``).
    public var validLosses: [Double] { values.map { $0[1] } }
    public var trainLosses: [Double] { values.map { $0[0] } }

    private var smooth = 0.0, count = 0
    private var validSum = 0.0, validCount = 0
    private var metricSums: [Double] = []
    private var epochStart = 0.0, trainStart: Double?

    public init(metrics: [Metric]) { self.metrics = metrics }

    /// Column names of the results table (without `epoch` and `time`).
    public var metricNames: [String] { ["train_loss", "valid_loss"] + metrics.map(\.name) }

    /// The last smoothed training loss.
    public var smoothLoss: Double { count == 0 ? .nan : smooth / (1 - Foundation.pow(beta, Double(count))) }

    /// The history a resumed run continues.
    struct State: Codable {
        var losses: [Double], rawLosses: [Double], lrs: [Double], moms: [Double], values: [[Double]]
        var epochTimes: [Double], trainTimes: [Double], trainItems: Int, smooth: Double, count: Int
    }

    public override func checkpointState() throws -> Data? {
        try JSONEncoder().encode(
            State(
                losses: losses, rawLosses: rawLosses, lrs: lrs, moms: moms, values: values,
                epochTimes: epochTimes, trainTimes: trainTimes, trainItems: trainItems,
                smooth: smooth, count: count))
    }

    public override func restore(checkpointState data: Data) throws {
        let s = try JSONDecoder().decode(State.self, from: data)
        (losses, rawLosses, lrs, moms, values) = (s.losses, s.rawLosses, s.lrs, s.moms, s.values)
        (epochTimes, trainTimes, trainItems, smooth, count) = (
            s.epochTimes, s.trainTimes, s.trainItems, s.smooth, s.count
        )
    }

    public override func beforeFit(_ learn: Learner) {
        trainStart = nil
        guard !learn.isResuming else { return }
        losses = []; rawLosses = []; lrs = []; moms = []; values = []; epochTimes = []; trainTimes = []
        trainItems = 0
        smooth = 0
        count = 0
    }

    public override func beforeEpoch(_ learn: Learner) { epochStart = now() }

    public override func beforeTrain(_ learn: Learner) { trainStart = now() }

    public override func afterTrain(_ learn: Learner) { closeTrainTime() }

    /// A fit cancelled mid-epoch (Ctrl-C, NaN) skips `afterTrain`: its partial training pass still counts, so that
    /// ``trainItemsPerSecond`` divides the items seen by the time spent on them.
    public override func afterFit(_ learn: Learner) { closeTrainTime() }

    private func closeTrainTime() {
        if let t = trainStart { trainTimes.append(now() - t) }
        trainStart = nil
    }

    public override func beforeValidate(_ learn: Learner) {
        validSum = 0
        validCount = 0
        metricSums = Array(repeating: 0, count: metrics.count)
    }

    public override func afterBatch(_ learn: Learner) {
        guard let loss = learn.loss else { return }
        let bs = learn.batch.y.shape.first ?? 1
        let l = loss.item()
        if learn.training {
            count += 1
            smooth = beta * smooth + (1 - beta) * l
            rawLosses.append(l)
            losses.append(smoothLoss)
            let h = learn.opt!.paramGroups.last!.hyper
            lrs.append(h.lr)
            moms.append(h.mom)
            trainItems += bs * learn.group.size  // every rank's batch is as large (padded shards)
        } else {
            validSum += l * Double(bs)
            validCount += bs
            for (i, m) in metrics.enumerated() {
                metricSums[i] += m.fn(learn.preds!.detached(), learn.batch.y) * Double(bs)
            }
        }
    }

    /// In a distributed job, the sums over every rank's shard: the whole validation set, each item once.
    public override func afterValidate(_ learn: Learner) {
        guard learn.group.size > 1 else { return }
        var v = [validSum, Double(validCount)] + metricSums
        learn.group.allReduce(&v)
        (validSum, validCount, metricSums) = (v[0], Int(v[1]), Array(v[2...]))
    }

    public override func afterEpoch(_ learn: Learner) {
        let n = Double(Swift.max(validCount, 1))
        let valid = validCount > 0 ? validSum / n : .nan
        values.append([smoothLoss, valid] + metricSums.map { validCount > 0 ? $0 / n : .nan })
        epochTimes.append(now() - epochStart)
        validCount = 0
        metricSums = metricSums.map { _ in 0 }
    }

    /// Training throughput of the last fit: items over seconds spent in training passes (evaluation excluded).
    public var trainItemsPerSecond: Double { trainItems > 0 ? Double(trainItems) / trainTimes.reduce(0, +) : 0 }

    /// The last epoch's value of `name` (`train_loss`, `valid_loss` or a metric).
    public func last(_ name: String) -> Double? {
        guard let i = metricNames.firstIndex(of: name), let row = values.last else { return nil }
        return row[i]
    }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// Sets hyper-parameters from schedules before every training batch, at position `trainIter / total`
/// (fastai's `ParamScheduler`).
public final class ParamScheduler: Callback {
    public let schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]
    public init(_ schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]) { self.schedules = schedules }

    public override func beforeBatch(_ learn: Learner) {
        guard learn.training, let opt = learn.opt else { return }
        opt.set(schedules, step: learn.trainIter, of: learn.nEpochs * learn.dls.train.count)
    }
}

/// Sets hyper-parameters from schedules once per epoch (step = epoch of `nEpochs`).
public final class EpochScheduler: Callback {
    public let schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]
    public init(_ schedules: [(WritableKeyPath<Hyper, Double>, Schedule)]) { self.schedules = schedules }

    public override func beforeEpoch(_ learn: Learner) {
        guard let opt = learn.opt else { return }
        opt.set(schedules, step: learn.epoch, of: learn.nEpochs)
    }
}

/// Stops the fit after one batch (dry runs, summaries).
public final class SingleBatch: Callback {
    public override var order: Int { 1 }
    public override init() {}
    public override func afterBatch(_ learn: Learner) throws { throw CancelFit() }
}

/// Collects validation predictions (after `activation`) and targets.
public final class CapturePreds: Callback {
    public private(set) var preds: [Tensor] = [], targets: [Tensor] = [], losses: [Tensor] = []
    let activation: (Tensor) -> Tensor
    let perItemLoss: Loss?
    /// - Parameter perItemLoss: also keep each item's loss (a loss with reduction `.none`).
    public init(activation: @escaping (Tensor) -> Tensor = { $0 }, perItemLoss: Loss? = nil) {
        self.activation = activation
        self.perItemLoss = perItemLoss
    }

    public override func afterBatch(_ learn: Learner) {
        guard !learn.training, let p = learn.preds else { return }
        preds.append(activation(p.detached()))
        targets.append(learn.batch.y)
        if let perItemLoss { losses.append(perItemLoss(p.detached(), learn.batch.y)) }
    }
}

/// Watches a recorded value (fastai's `TrackerCallback`).
public class Tracker: Callback {
    public let monitor: String
    public let lowerIsBetter: Bool
    public let minDelta: Double
    public private(set) var best: Double?
    /// Whether the last epoch improved on the best value.
    public private(set) var improved = false

    public init(monitor: String = "valid_loss", lowerIsBetter: Bool? = nil, minDelta: Double = 0) {
        self.monitor = monitor
        self.lowerIsBetter = lowerIsBetter ?? (monitor.hasSuffix("loss") || monitor == "error_rate")
        self.minDelta = minDelta
    }

    public override var order: Int { 60 }

    public override func checkpointState() throws -> Data? { try JSONEncoder().encode(trackedState) }

    public override func restore(checkpointState data: Data) throws {
        trackedState = try JSONDecoder().decode([String: Double].self, from: data)
    }

    /// What a resumed run keeps: the best value, and a subclass's counters.
    var trackedState: [String: Double] {
        get { best.map { ["best": $0] } ?? [:] }
        set { best = newValue["best"] }
    }

    public override func beforeFit(_ learn: Learner) throws {
        if !learn.isResuming { best = nil }
        require(
            learn.recorder.metricNames.contains(monitor),
            "\(type(of: self)): cannot monitor \(monitor); recorded values are \(learn.recorder.metricNames)")
    }

    public override func afterEpoch(_ learn: Learner) throws {
        guard let v = learn.recorder.last(monitor), !v.isNaN else { improved = false; return }
        if let b = best {
            improved = lowerIsBetter ? v < b - minDelta : v > b + minDelta
        } else {
            improved = true
        }
        if improved { best = v }
    }
}

/// Stops when the monitored value has not improved for `patience` epochs.
public final class EarlyStopping: Tracker {
    public let patience: Int
    private var wait = 0

    public init(monitor: String = "valid_loss", minDelta: Double = 0, patience: Int = 1) {
        self.patience = patience
        super.init(monitor: monitor, minDelta: minDelta)
    }

    override var trackedState: [String: Double] {
        get { super.trackedState.merging(["wait": Double(wait)]) { a, _ in a } }
        set {
            super.trackedState = newValue
            wait = Int(newValue["wait"] ?? 0)
        }
    }

    public override func beforeFit(_ learn: Learner) throws {
        try super.beforeFit(learn)
        if !learn.isResuming { wait = 0 }
    }

    public override func afterEpoch(_ learn: Learner) throws {
        try super.afterEpoch(learn)
        wait = improved ? 0 : wait + 1
        if wait >= patience {
            try learn.stop(
                """
                early stopping: \(monitor) did not improve for \(patience) epoch(s) (best \
                \(best.map { String($0) } ?? "-"))
                """
            )
        }
    }
}

/// Saves the model whenever the monitored value improves (or every epoch), and reloads the best at the end.
public final class SaveModel: Tracker {
    public let path: String
    public let everyEpoch: Bool
    public let loadBestAtEnd: Bool

    public init(path: String, monitor: String = "valid_loss", everyEpoch: Bool = false, loadBestAtEnd: Bool = true) {
        self.path = path
        self.everyEpoch = everyEpoch
        self.loadBestAtEnd = loadBestAtEnd
        super.init(monitor: monitor)
    }

    public override func afterEpoch(_ learn: Learner) throws {
        try super.afterEpoch(learn)
        guard learn.group.isMain else { return }
        if everyEpoch {
            try learn.model.save(to: path.replacingOccurrences(of: ".safetensors", with: "_\(learn.epoch).safetensors"))
        } else if improved {
            try learn.model.save(to: path, metadata: [monitor: String(best ?? .nan), "epoch": String(learn.epoch)])
        }
    }

    public override func afterFit(_ learn: Learner) throws {
        guard loadBestAtEnd && !everyEpoch else { return }
        // Rank 0 wrote the file; the others take its weights from rank 0 (no shared file system needed).
        let found = learn.agreed(learn.group.isMain && FileManager.default.fileExists(atPath: path))
        if found && learn.group.isMain { try learn.model.load(from: path) }
        if found { learn.broadcastState(parameters: true) }
    }
}

/// Writes the results table to a CSV file (`epoch,train_loss,valid_loss,…,time`), one row per epoch.
public final class CSVLogger: Callback {
    public override var order: Int { 60 }
    public let path: String
    public let append: Bool
    private var rows: [String] = []

    public init(path: String, append: Bool = false) {
        self.path = path
        self.append = append
    }

    public override func checkpointState() throws -> Data? { try JSONEncoder().encode(rows) }
    public override func restore(checkpointState data: Data) throws {
        rows = try JSONDecoder().decode([String].self, from: data)
    }

    public override func beforeFit(_ learn: Learner) {
        guard !learn.isResuming else { return }
        let header = (["epoch"] + learn.recorder.metricNames + ["time"]).joined(separator: ",")
        rows =
            append && FileManager.default.fileExists(atPath: path)
            ? ((try? String(contentsOfFile: path, encoding: .utf8))?.split(
                separator: """
                    \n
                    """
            ).map(String.init) ?? [header])
            : [header]
    }

    public override func afterEpoch(_ learn: Learner) throws {
        guard learn.group.isMain else { return }
        let v = learn.recorder.values.last ?? []
        rows.append(
            ([String(learn.epoch)] + v.map { String($0) } + [formatTime(learn.recorder.epochTimes.last ?? 0)]).joined(
                separator: ","))
        try writeAtomically(rows.joined(separator: "\n") + "\n", to: path)
    }
}

/// Writes text to `path` through a temporary file and a rename.
func writeAtomically(_ text: String, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    try text.write(toFile: tmp, atomically: false, encoding: .utf8)
    guard rename(tmp, path) == 0 else {
        try? FileManager.default.removeItem(atPath: tmp)
        throw CocoaError(.fileWriteUnknown)
    }
}

/// Stops the fit on a non-finite loss (before the step, so the weights are those of the last good step) or on
/// non-finite gradients (before they are applied), naming the epoch and batch.
public final class TerminateOnNaN: Callback {
    public override var order: Int { -10 }
    public override init() {}

    public override func afterLoss(_ learn: Learner) throws {
        guard let l = learn.loss?.item(), !l.isFinite else { return }
        try learn.stop(
            """
            loss is \(l.isNaN ? "NaN" : String(l)) at epoch \(learn.epoch), batch \(learn.iter) \
            (\(learn.training ? "training" : "validation")); training stopped, weights kept from the last good step. \
            Lower the learning rate (lrFind suggests one).
            """
        )
    }

    public override func afterBackward(_ learn: Learner) throws {
        // Under float16 loss scaling, overflowing gradients are expected: the scaler skips that step.
        if learn.callback(MixedPrecision.self)?.scalesLoss == true { return }
        // The optimizer's list, not `model.parameters()`: reflection on every batch cost 15 % of a small model's step.
        for p in learn.opt?.parameters ?? learn.model.parameters() {
            guard let g = p.grad else { continue }
            if !(g * g).sum().item().isFinite {
                try learn.stop(
                    """
                    non-finite gradients at epoch \(learn.epoch), batch \(learn.iter); training stopped before \
                    applying them, weights kept from the last good step. Lower the learning rate or add GradientClip.
                    """
                )
            }
        }
    }
}

/// Rescales gradients so their global L2 norm is at most `maxNorm` (PyTorch's `clip_grad_norm_`).
public final class GradientClip: Callback {
    public let maxNorm: Double
    /// The norm before clipping, at the last batch.
    public private(set) var lastNorm = 0.0

    public init(maxNorm: Double = 1) { self.maxNorm = maxNorm }

    public override func afterBackward(_ learn: Learner) {
        let params = (learn.opt?.parameters ?? learn.model.parameters()).filter { $0.grad != nil }
        lastNorm = params.reduce(0.0) { $0 + ($1.grad! * $1.grad!).sum().item() }.squareRoot()
        let scale = maxNorm / (lastNorm + 1e-6)
        guard scale < 1 else { return }
        noGrad { for p in params { p.grad = p.grad! * scale } }
    }
}

/// Ctrl-C stops the fit after the current batch (with ``Learner/stopReason`` set) instead of killing the process.
public final class Interrupt: Callback {
    /// Last, so that the batch it stops after is recorded like any other.
    public override var order: Int { 90 }
    nonisolated(unsafe) static var requested: sig_atomic_t = 0
    public override init() {}

    public override func beforeFit(_ learn: Learner) {
        Interrupt.requested = 0
        signal(SIGINT) { _ in Interrupt.requested = 1 }
        // A parent process may have blocked SIGINT for us; Ctrl-C must reach the training thread.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// In a distributed job, every rank stops at the same batch: the ranks agree on whether any saw Ctrl-C after
    /// each training batch, and after the validation pass (whose shards differ in length).
    public override func afterBatch(_ learn: Learner) throws {
        guard learn.training || learn.group.size == 1 else { return }
        try stopIfRequested(learn)
    }

    public override func afterValidate(_ learn: Learner) throws {
        if learn.group.size > 1 { try stopIfRequested(learn) }
    }

    private func stopIfRequested(_ learn: Learner) throws {
        if learn.agreed(Interrupt.requested != 0) {
            learn.interrupted = true
            try learn.stop("interrupted (Ctrl-C) at epoch \(learn.epoch), batch \(learn.iter)")
        }
    }

    /// The Ctrl-C is spent: the passes after the fit (predictions, exports) run.
    public override func cleanupFit(_ learn: Learner) {
        signal(SIGINT, SIG_DFL)
        Interrupt.requested = 0
    }
}

/// `mm:ss` as fastai prints epoch times.
public func formatTime(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return String(format: "%02d:%02d", s / 60, s % 60)
}
