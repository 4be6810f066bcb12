import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAINN
import SwiftAIOptim

/// Thrown by a callback to skip the rest of the current batch (`afterCancelBatch`, then `afterBatch`, run).
public struct CancelBatch: Error { public init() {} }
/// Thrown from `beforeStep` to skip the optimizer step of this batch (fastai's `CancelStepException`); `afterStep`
/// and the rest of the batch still run.
public struct CancelStep: Error { public init() {} }
/// Thrown to end the current training phase of an epoch.
public struct CancelTrain: Error { public init() {} }
/// Thrown to end the current validation phase.
public struct CancelValidate: Error { public init() {} }
/// Thrown to end the current epoch.
public struct CancelEpoch: Error { public init() {} }
/// Thrown to end the whole fit (after `afterCancelFit` and `afterFit`).
public struct CancelFit: Error {
    public let reason: String?
    public init(_ reason: String? = nil) { self.reason = reason }
}

/// Problems found before training starts (bad data or a model that does not fit the loss).
public enum LearnerError: Error, CustomStringConvertible {
    case lossMismatch(String)
    case emptyData(String)
    /// The estimated memory of a training step exceeds what is available.
    case outOfMemory(String)

    public var description: String {
        switch self {
        case let .lossMismatch(s): return "the model does not fit the loss: \(s)"
        case let .emptyData(s): return "no data: \(s)"
        case let .outOfMemory(s): return "not enough memory: \(s)"
        }
    }
}

/// A participant in the training loop (fastai's `Callback`): subclass and override the events you need; each
/// defaults to doing nothing. Events are these methods, listed here once; the Learner fires one by its method
/// (`learn.fire(Callback.afterEpoch)`), so an override with a misspelt name does not compile.
///
/// Throw ``CancelBatch``, ``CancelEpoch``, ``CancelFit`` (…) to skip ahead; `cleanup…` events always run, even
/// when an error ends the fit. ``order``: lower runs first (default 0).
open class Callback {
    public init() {}

    open var order: Int { 0 }

    /// Runs the whole fit (`body`) inside a context the ops consult (``MixedPrecision``: ``autocast(_:_:)``), so
    /// every module — built-in or user-written — computes under it. By default, just runs `body`.
    open func fitScope(_ body: () throws -> Void) throws { try body() }

    /// What this callback carries across a resumed run (e.g. the best value so far), saved in checkpoints; `nil`:
    /// nothing. ``restore(checkpointState:)`` gets it back before the resumed fit's `beforeFit`, which then sees
    /// ``Learner/isResuming`` and should not reset it.
    open func checkpointState() throws -> Data? { nil }
    open func restore(checkpointState: Data) throws {}

    // The events, in the order a fit meets them.
    open func beforeFit(_ learn: Learner) throws {}
    open func beforeEpoch(_ learn: Learner) throws {}
    open func beforeTrain(_ learn: Learner) throws {}
    open func beforeValidate(_ learn: Learner) throws {}
    open func beforeBatch(_ learn: Learner) throws {}
    open func afterPredict(_ learn: Learner) throws {}
    open func afterLoss(_ learn: Learner) throws {}
    open func beforeBackward(_ learn: Learner) throws {}
    open func afterBackward(_ learn: Learner) throws {}
    open func beforeStep(_ learn: Learner) throws {}
    open func afterStep(_ learn: Learner) throws {}
    open func afterCancelBatch(_ learn: Learner) throws {}
    open func afterBatch(_ learn: Learner) throws {}
    open func cleanupBatch(_ learn: Learner) throws {}
    open func afterCancelTrain(_ learn: Learner) throws {}
    open func afterTrain(_ learn: Learner) throws {}
    open func cleanupTrain(_ learn: Learner) throws {}
    open func afterCancelValidate(_ learn: Learner) throws {}
    open func afterValidate(_ learn: Learner) throws {}
    open func cleanupValidate(_ learn: Learner) throws {}
    open func afterCancelEpoch(_ learn: Learner) throws {}
    open func afterEpoch(_ learn: Learner) throws {}
    open func cleanupEpoch(_ learn: Learner) throws {}
    open func afterCancelFit(_ learn: Learner) throws {}
    open func afterFit(_ learn: Learner) throws {}
    open func cleanupFit(_ learn: Learner) throws {}
}

/// One event of the training loop: a method of ``Callback`` (e.g. `Callback.afterBatch`).
public typealias Event = (Callback) -> (Learner) throws -> Void

/// The training step as a replaceable callback: how a batch becomes predictions, a loss, gradients and an
/// update. Subclass and override (e.g. gradient accumulation, another loss signature) and assign to
/// ``Learner/trainStep``; it receives every event too.
open class TrainStep: Callback {
    public override init() { super.init() }

    /// `learn.preds = model(x)`.
    open func predict(_ learn: Learner) throws { learn.preds = learn.model(learn.batch.x) }
    /// `learn.loss = lossFunc(preds, y)`.
    open func getLoss(_ learn: Learner) throws { learn.loss = learn.lossFunc(learn.preds!, learn.batch.y) }
    open func backward(_ learn: Learner) throws { learn.loss!.backward() }
    open func step(_ learn: Learner) throws { learn.opt!.step() }
    open func zeroGrad(_ learn: Learner) throws { learn.opt!.zeroGrad() }
}

/// Trains a model on data with a loss and an optimizer, driven by callbacks.
public final class Learner {
    public let model: Module
    /// What the model is, when it was built from a description (``visionLearner``, the lesson's models): what an
    /// export bundle records to rebuild it.
    public var modelSpec: ModelSpec?
    public var dls: DataLoaders
    public let lossFunc: Loss
    /// Default learning rate for ``fit(_:lr:train:valid:callbacks:resetOpt:)``.
    public var lr: Double
    /// Builds the optimizer (once, on the first fit, or again with `resetOpt`).
    public var optFunc: (Module, Double) -> Optimizer
    public var opt: Optimizer?
    public private(set) var callbacks: [Callback] = []
    public var trainStep = TrainStep()
    /// Splits the model's parameters into layer groups for freezing and discriminative learning rates (fastai's
    /// `splitter`); `nil`: one group.
    public var splitter: ((Module) -> [[Parameter]])?
    /// The recorder (history, plots), always installed.
    public let recorder: Recorder

    // Loop state, readable by callbacks.
    public internal(set) var epoch = 0
    public internal(set) var nEpochs = 0
    public internal(set) var iter = 0
    public internal(set) var nIter = 0
    public internal(set) var training = false
    /// Training batches completed in this fit (updated after each step, before `afterBatch`), and that count as a
    /// fraction of all training batches of the fit.
    public internal(set) var trainIter = 0
    public internal(set) var pctTrain = 0.0
    public var batch: Batch = (Tensor.zeros([0]), Tensor.zeros([0]))
    public var preds: Tensor?
    public var loss: Tensor?
    /// Why the last fit stopped early (NaN, early stopping, interruption), if it did.
    public internal(set) var stopReason: String?
    public internal(set) var dl: DataLoader
    /// Whether the last fit was stopped by Ctrl-C (``Interrupt``).
    public internal(set) var interrupted = false
    /// True during the `beforeFit` of a fit that continues a checkpoint (``resume(from:)``): callbacks whose state
    /// was restored keep it.
    public internal(set) var isResuming = false
    /// True inside ``preservingState(_:)`` (`lrFind`, `summary`): fits whose effects are undone, which are not part
    /// of the run a checkpoint records.
    public internal(set) var isExploring = false
    /// The run's fits started since the learner was built (a resumed run counts those it skips).
    var fitsStarted = 0
    /// Training batches done in the current epoch, and whether the epoch's passes are done.
    var trainBatchesDone = 0, epochComplete = false
    /// A checkpoint loaded by ``resume(from:)``, waiting for the fit it continues.
    var pendingResume: PendingResume?
    /// The processes training this model together (``distributed(_:bucketMegabytes:_:)``); ``ProcessGroup/single``
    /// otherwise. Rank 0 alone prints and writes files.
    public internal(set) var group = ProcessGroup.single
    var reducer: GradientReducer?
    var syncsGradients = true
    private var _memoryLimit: Int?

    /// - Parameters:
    ///   - metrics: computed on the validation set each epoch (e.g. ``Metric/accuracy``).
    ///   - progress: show the live bar and the results table.
    ///   - optFunc: defaults to fastai's AdamW (mom 0.9, sqr_mom 0.99, eps 1e-5, wd 0.01; no decay on BN/bias).
    public init(
        model: Module, dls: DataLoaders, lossFunc: Loss = CrossEntropyLoss(), lr: Double = 1e-3,
        metrics: [Metric] = [], callbacks: [Callback] = [], progress: Bool = true,
        optFunc: @escaping (Module, Double) -> Optimizer = { AdamW.fastai($0, lr: $1) }
    ) {
        self.model = model
        self.dls = dls
        self.lossFunc = lossFunc
        self.lr = lr
        self.optFunc = optFunc
        recorder = Recorder(metrics: metrics)
        dl = dls.train
        add(recorder)
        if progress { add(ProgressCallback()) }
        for cb in callbacks { add(cb) }
    }

    /// Releasing a learner hands the tensor memory cached for its training steps back to the system, so
    /// building the next one starts from the same footprint.
    deinit { BlockCache.shared.emptyCache() }

    /// Installs a callback for all later fits.
    public func add(_ cb: Callback) {
        callbacks.append(cb)
        callbacks.sort { $0.order < $1.order }
    }

    /// Removes a callback.
    public func remove(_ cb: Callback) { callbacks.removeAll { $0 === cb } }

    /// The installed callback of type `T`, if any.
    public func callback<T: Callback>(_: T.Type) -> T? { callbacks.first { $0 is T } as? T }

    /// Sends `event` to the training step and every callback, in order.
    public func fire(_ event: Event) throws {
        try event(trainStep)(self)
        for cb in callbacks { try event(cb)(self) }
    }

    /// Runs `body` between `before` and `after` events; a `cancel` error runs `afterCancel` and then `after`
    /// (as fastai); `cleanup` always runs.
    private func withEvents<E: Error>(
        _ before: Event, _ after: Event, _ cancel: E.Type, _ afterCancel: Event,
        _ cleanup: Event, _ body: () throws -> Void
    ) throws {
        var cleaned = false
        defer { if !cleaned { try? fire(cleanup) } }
        do {
            try fire(before)
            try body()
        } catch is E {
            try fire(afterCancel)
        }
        try fire(after)
        cleaned = true
        try fire(cleanup)
    }

    private func oneBatch() throws {
        try withEvents(
            Callback.beforeBatch, Callback.afterBatch, CancelBatch.self, Callback.afterCancelBatch,
            Callback.cleanupBatch
        ) {
            try trainStep.predict(self)
            try fire(Callback.afterPredict)
            try trainStep.getLoss(self)
            if training && group.size > 1 { agreeOnLoss() }
            try fire(Callback.afterLoss)
            guard training else { return }
            defer { try? trainStep.zeroGrad(self) }
            try fire(Callback.beforeBackward)
            if group.size > 1, syncsGradients, let reducer {
                reducer.paused = false
                reducer.prepare(opt?.parameters ?? model.parameters())
                let hooks = GradHooks { [unowned reducer] in reducer.gradientReady($0) }
                try GradHooks.$current.withValue(hooks) { try trainStep.backward(self) }
                reducer.finish()
            } else {
                try trainStep.backward(self)
            }
            try fire(Callback.afterBackward)
            do {
                try fire(Callback.beforeStep)
                try trainStep.step(self)
            } catch is CancelStep {}
            try fire(Callback.afterStep)
            // Counted before `afterBatch`, as fastai's TrainEvalCallback does.
            trainIter += 1
            trainBatchesDone = iter + 1
            pctTrain = Double(trainIter) / Double(Swift.max(nEpochs * dls.train.count, 1))
        }
    }

    /// In a distributed job, the loss every callback sees is the mean over ranks (so decisions taken from it, such as
    /// stopping on NaN, are the same everywhere); backward still starts from this rank's own loss.
    private func agreeOnLoss() {
        guard let loss else { return }
        let local = loss.item()
        var v = [local]
        group.allReduce(&v)
        self.loss = loss + (v[0] / Double(group.size) - local)
    }

    /// One pass over the training or validation set, from batch `start` (a resumed run's next batch).
    private func oneEpoch(training t: Bool, from start: Int = 0) throws {
        // Validation uses rank 0's BatchNorm statistics (ranks keep their own while training), as one process would.
        if !t { broadcastState() }
        training = t
        model.train(t)
        dl = t ? dls.train : dls.valid
        dl.epoch = epoch
        nIter = dl.count
        let run = {
            let batches = self.dl.makeIterator(from: start)
            var i = start
            while let b = try batches.nextBatch() {
                self.iter = i
                self.batch = b
                try self.oneBatch()
                i += 1
            }
        }
        if t {
            try withEvents(
                Callback.beforeTrain, Callback.afterTrain, CancelTrain.self, Callback.afterCancelTrain,
                Callback.cleanupTrain, run)
        } else {
            try noGrad {
                try withEvents(
                    Callback.beforeValidate, Callback.afterValidate, CancelValidate.self,
                    Callback.afterCancelValidate, Callback.cleanupValidate, run)
            }
        }
    }

    /// Trains for `nEpochs` epochs (each: a training pass, then a validation pass).
    ///
    /// - Parameters:
    ///   - lr: learning rate for this fit (default ``lr``).
    ///   - callbacks: callbacks that live for this fit only.
    ///   - resetOpt: build a fresh optimizer (otherwise its state carries over from the last fit, as fastai).
    /// - Throws: ``LearnerError`` when a one-batch check finds the model's output does not fit the loss;
    ///   errors thrown by callbacks. Cancellations are not errors.
    public func fit(
        _ nEpochs: Int, lr: Double? = nil, train: Bool = true, valid: Bool = true,
        callbacks extra: [Callback] = [], resetOpt: Bool = false
    ) throws {
        let index = fitsStarted
        if !isExploring { fitsStarted += 1 }
        var resume: PendingResume?
        if let pending = pendingResume, !isExploring {
            if index < pending.position.fit { return }  // the checkpointed run had finished this fit
            guard nEpochs == pending.position.nEpochs else {
                throw CheckpointError.mismatch(
                    path: pending.path,
                    what: "its fit \(index) ran \(pending.position.nEpochs) "
                        + "epochs; this one asks for \(nEpochs)")
            }
            resume = pending
            pendingResume = nil
        }
        if group.size > 1 && dls.train.batchSize % group.size != 0 {
            throw DistributedError.unevenBatch(batch: dls.train.batchSize, size: group.size)
        }
        for cb in extra { add(cb) }
        defer { for cb in extra { remove(cb) } }
        try dryRun(train ? nil : dls.valid)
        if opt == nil || (resetOpt && resume == nil) { opt = optFunc(model, lr ?? self.lr) }
        for i in opt!.paramGroups.indices { opt!.paramGroups[i].lrMult = 1 }  // a slice applies again in beforeFit
        if let lr { opt!.set(\.lr, lr) }
        self.nEpochs = nEpochs
        let start = resume?.position
        trainIter = start?.trainIter ?? 0
        pctTrain = Double(trainIter) / Double(Swift.max(nEpochs * dls.train.count, 1))
        stopReason = nil
        interrupted = false
        epochComplete = false
        if let resume {
            try resume.restoreCallbacks(self)
            isResuming = true
        }
        defer { isResuming = false }
        var run = {
            try self.withEvents(
                Callback.beforeFit, Callback.afterFit, CancelFit.self, Callback.afterCancelFit,
                Callback.cleanupFit
            ) {
                self.isResuming = false
                try resume?.restoreOptimizer(self)
                for e in (start?.epoch ?? 0)..<Swift.max(nEpochs, start?.epoch ?? 0) {
                    self.epoch = e
                    let skip = e == start?.epoch ? start!.batch : 0
                    self.trainBatchesDone = skip
                    self.epochComplete = false
                    try self.withEvents(
                        Callback.beforeEpoch, Callback.afterEpoch, CancelEpoch.self,
                        Callback.afterCancelEpoch, Callback.cleanupEpoch
                    ) {
                        do {
                            if train && skip < self.dls.train.count { try self.oneEpoch(training: true, from: skip) }
                            if valid { try self.oneEpoch(training: false) }
                        } catch let cancel as CancelEpoch {
                            // A cancelled epoch is over too: a run resumed from here goes on with the next one.
                            self.epochComplete = true
                            throw cancel
                        }
                        self.epochComplete = true
                    }
                }
            }
        }
        for cb in callbacks {
            let inner = run
            run = { try cb.fitScope(inner) }
        }
        try run()
    }

    /// Records why a fit stops and cancels it.
    public func stop(_ reason: String) throws -> Never {
        stopReason = reason
        throw CancelFit(reason)
    }

    /// Checks one batch before long work: the model runs (evaluation mode, no state changes) and its output
    /// must fit the loss — a mismatch throws naming both shapes — and a training step must fit in memory.
    /// With `dl` (a validation-only pass) the batch comes from it and memory is not checked.
    public func dryRun(_ dl: DataLoader? = nil) throws {
        let loader = dl ?? dls.train, name = dl == nil ? "training" : "evaluated"
        guard loader.count > 0 else {
            throw LearnerError.emptyData(
                "the \(name) set has \(loader.itemCount) items for batch size \(loader.batchSize)")
        }
        let (x, y) = try loader.first()
        let wasTraining = model.training
        model.eval()
        defer { model.train(wasTraining) }
        // One forward on two items that keeps its autograd graph: its output is checked against the loss, and the
        // memory it holds sizes a training step (evaluation mode, so no statistics change).
        let k = Swift.min(2, x.shape[0])
        let (outShape, perItem): ([Int], Int) = BlockCache.shared.countingThreadAllocations { netBytes in
            let out = model(x[0..<k])
            return (out.shape, Swift.max(0, netBytes() + out.count * 4) / Swift.max(k, 1))
        }
        // The output the whole first batch would have, checked against all of its targets.
        let shape = [x.shape[0]] + outShape.dropFirst()
        if let problem = lossFunc.mismatch(output: outShape.isEmpty ? [] : shape, target: y) {
            throw LearnerError.lossMismatch("\(problem) (input batch \(x.shape), \(type(of: lossFunc)))")
        }
        if dl == nil { try checkMemory(batch: x.shape, perItem: perItem) }
    }

    /// Memory a training step may use before a fit refuses to start (default: the system's available memory).
    public var memoryLimitBytes: Int? {
        get { _memoryLimit ?? availableMemoryBytes() }
        set { _memoryLimit = newValue }
    }

    /// A training step's memory: `perItem` bytes of activations (measured by ``dryRun()``) × the batch size, plus
    /// parameters, gradients and two AdamW moments. Over ``memoryLimitBytes``, throws with the estimate and a batch
    /// size that fits (rather than dying mid-epoch).
    func checkMemory(batch shape: [Int], perItem: Int) throws {
        guard let limit = memoryLimitBytes, shape[0] > 0 else { return }
        let params = model.parameters().reduce(0) { $0 + $1.value.count * 4 }
        let estimate = perItem * shape[0] + 4 * params
        guard estimate > limit else { return }
        let fits = Swift.max(0, (limit * 8 / 10 - 4 * params) / Swift.max(perItem, 1))
        let mb = { (b: Int) in String(b / 1_048_576) + " MB" }
        throw LearnerError.outOfMemory(
            """
            a training step on batches of \(shape) needs about \(mb(estimate)) (\(mb(perItem)) of activations per \
            item, 
            """
                + "\(mb(4 * params)) for weights, gradients and optimizer state), but \(mb(limit)) is available; "
                + (fits > 0
                    ? "use a batch size of \(fits) or less, or a smaller image size"
                    : "use a smaller model or image size"))
    }

    // MARK: fastai conveniences

    /// fastai's `fit_one_cycle`: cosine warm-up from `lrMax/div` to `lrMax` over `pctStart`, then cosine
    /// annealing to `lrMax/divFinal`; momentum 0.95 → 0.85 → 0.95.
    public func fitOneCycle(
        _ nEpochs: Int, lrMax: Double? = nil, div: Double = 25, divFinal: Double = 1e5,
        pctStart: Double = 0.25, moms: (Double, Double, Double) = (0.95, 0.85, 0.95),
        callbacks extra: [Callback] = [], resetOpt: Bool = false
    ) throws {
        let lrMax = lrMax ?? lr
        let (lrs, ms) = Schedule.fastaiOneCycle(
            lrMax: lrMax, div: div, divFinal: divFinal, pctStart: pctStart, moms: moms)
        try fit(nEpochs, lr: lrMax, callbacks: [ParamScheduler([(\.lr, lrs), (\.mom, ms)])] + extra, resetOpt: resetOpt)
    }

    /// Predictions (after the loss's activation: probabilities for cross-entropy) and targets over `dl`
    /// (default the validation set), in order, in evaluation mode.
    public func getPreds(_ dl: DataLoader? = nil) throws -> (preds: Tensor, targets: Tensor) {
        let c = try capturePreds(dl, withLoss: false)
        return (c.preds, c.targets)
    }

    /// ``getPreds(_:)`` with each item's loss as well (fastai's `get_preds(with_loss=True)`).
    public func getPreds(_ dl: DataLoader? = nil, withLoss: Bool) throws -> (
        preds: Tensor, targets: Tensor, losses: Tensor
    ) {
        let c = try capturePreds(dl, withLoss: true)
        return (c.preds, c.targets, c.losses!)
    }

    /// A validation pass over `dl` collecting predictions, targets and (`withLoss`) per-item losses; in a
    /// distributed job each rank runs its shard and the results are gathered in order.
    private func capturePreds(_ dl: DataLoader?, withLoss: Bool) throws -> (
        preds: Tensor, targets: Tensor, losses: Tensor?
    ) {
        let capture = CapturePreds(
            activation: { self.lossFunc.activation($0) },
            perItemLoss: withLoss ? lossFunc.with(reduction: .none) : nil)
        let saved = callbacks
        callbacks = callbacks.filter { !($0 is Recorder || $0 is ProgressCallback) }
        let savedValid = dls.valid
        if let dl { dls.valid = dl }
        defer {
            callbacks = saved
            dls.valid = savedValid
        }
        add(capture)
        let savedShard = dls.valid.shard
        if group.size > 1 {
            guard dls.valid.itemCount >= group.size else {
                throw LearnerError.emptyData(
                    "\(dls.valid.itemCount) items to predict cannot be shared by \(group.size) processes")
            }
            dls.valid.shard = .init(rank: group.rank, count: group.size, padded: false)
        }
        defer { dls.valid.shard = savedShard }
        try dryRun(dls.valid)
        // A validation pass only (fastai's `get_preds`): its events, none of a fit's or an epoch's.
        var run = { try self.oneEpoch(training: false) }
        for cb in callbacks {
            let inner = run
            run = { try cb.fitScope(inner) }
        }
        try run()
        let gather = { (parts: [Tensor]) in self.gatherShards(Tensor.cat(parts, dim: 0), loader: self.dls.valid) }
        return (gather(capture.preds), gather(capture.targets), withLoss ? gather(capture.losses) : nil)
    }

    /// Runs `body` with the model's parameters and buffers, and the optimizer, restored afterwards.
    /// Fits inside are exploratory (``isExploring``): they are not the run's, so checkpoints ignore them.
    public func preservingState<R>(_ body: () throws -> R) rethrows -> R {
        let wasExploring = isExploring
        isExploring = true
        defer { isExploring = wasExploring }
        let weights = model.stateDict().mapValues { $0.clone() }
        let optState = opt?.stateSnapshot()
        let hadOpt = opt != nil
        defer {
            try? model.load(stateDict: weights)
            if let optState { opt?.restore(optState) }
            if !hadOpt { opt = nil }
            for p in model.parameters() { p.grad = nil }
        }
        return try body()
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (nil where it cannot be read).
func availableMemoryBytes() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
        let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { return nil }
    return kb * 1024
}
