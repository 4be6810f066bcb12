import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAINN

/// Data-parallel training (fastai's `distrib_ctx`, PyTorch's DistributedDataParallel) on a ``ProcessGroup``.
extension Learner {
    /// Runs `body` (fits, `lrFind`, `getPreds`, …) as rank `group.rank` of a data-parallel job.
    ///
    /// Before `body`, the ranks check they agree (SwiftAI version, data sizes, vocab, batch size, model) and take
    /// rank 0's parameters and buffers. Inside, each epoch's order is split across the ranks (``DataLoader/Shard``):
    /// training batches are the global batch ÷ size, padded so every rank runs the same steps; gradients are
    /// averaged by all-reduce in buckets of `bucketMegabytes`, started during backward as each bucket completes; the
    /// training loss is the mean over ranks and validation results are reduced over the whole validation set. Only
    /// rank 0 prints and writes files. Learning rates are not scaled.
    ///
    /// - Throws: ``DistributedError/ranksDiffer(_:)`` naming the ranks and what differs, on every rank. A fit inside
    ///   throws ``DistributedError/unevenBatch(batch:size:)`` when its batch size is not a multiple of the size.
    public func distributed<R>(
        _ group: ProcessGroup, bucketMegabytes: Double = 25, _ body: () throws -> R
    ) throws -> R {
        guard group.size > 1 else { return try body() }
        try checkRanksAgree(group)
        let saved = (self.group, dls.train.shard, dls.valid.shard, reducer)
        self.group = group
        dls.train.shard = .init(rank: group.rank, count: group.size, padded: true)
        dls.valid.shard = .init(rank: group.rank, count: group.size, padded: false)
        reducer = GradientReducer(group: group, bucketBytes: Int(bucketMegabytes * 1_048_576))
        defer {
            (self.group, dls.train.shard, dls.valid.shard, reducer) = saved
        }
        broadcastState(parameters: true)
        return try ProcessGroup.$current.withValue(group) { try body() }
    }

    /// Runs `body` without averaging gradients across ranks (PyTorch's `no_sync`): a training step that accumulates
    /// micro-batches (a ``TrainStep`` whose `backward` runs several) runs all but the last backward inside, so one
    /// all-reduce carries them all. A whole batch inside skips its synchronisation.
    public func noSync<R>(_ body: () throws -> R) rethrows -> R {
        let was = syncsGradients
        syncsGradients = false
        reducer?.paused = true
        defer {
            syncsGradients = was
            reducer?.paused = !was
        }
        return try body()
    }

    /// Gradient synchronisation so far in the current distributed job: seconds this rank waited for all-reduces
    /// after backward (communication backward did not hide), synchronised steps, buckets per step, and the share of
    /// gradient bytes whose all-reduce had completed when backward ended (hidden by it).
    public var gradientSyncStats: (exposedSeconds: Double, steps: Int, buckets: Int, hiddenShare: Double)? {
        reducer.map { ($0.exposedSeconds, $0.reductions, $0.bucketCount, $0.hiddenShare) }
    }

    /// Whether `flag` holds on any rank: the one all-reduced decision every rank then takes together (stop, save
    /// the best). Without a distributed job, `flag` itself.
    public func agreed(_ flag: Bool) -> Bool { group.size > 1 ? group.any(flag) : flag }

    /// Copies rank 0's buffers (BatchNorm statistics), and with `parameters` its parameters, to every rank.
    public func broadcastState(parameters: Bool = false) {
        guard group.size > 1 else { return }
        if parameters {
            for p in model.parameters() {
                var t = p.value.detached().contiguous()
                group.broadcast(&t)
                p.setData(t)
            }
        }
        for (_, b) in model.namedBuffers() {
            var t = b.value.contiguous()
            guard [.float32, .float64, .int64].contains(t.dtype) else { continue }
            group.broadcast(&t)
            b.value = t
        }
    }

    /// All ranks must train the same thing on the same data: compares what each saw before any step.
    func checkRanksAgree(_ group: ProcessGroup) throws {
        let model = model.stateDict().sorted { $0.key < $1.key }.map { "\($0.key)\($0.value.shape)" }
        let facts: [(String, String)] = [
            ("SwiftAI version", SwiftAIVersion.string),
            ("training items", String(dls.train.itemCount)),
            ("validation items", String(dls.valid.itemCount)),
            ("batch size", String(dls.train.batchSize)),
            ("vocab", dls.vocab.joined(separator: ",")),
            ("model", "\(model.count) tensors, digest \(digest(model.joined(separator: ";")))")
        ]
        let all = group.allGather(Data(facts.map(\.1).joined(separator: "\u{1}").utf8)).map {
            String(decoding: $0, as: UTF8.self).components(separatedBy: "\u{1}")
        }
        var problems: [String] = []
        for (i, (name, _)) in facts.enumerated() {
            let values = all.map { $0.count == facts.count ? $0[i] : "?" }
            let odd = values.indices.filter { values[$0] != values[0] }
            guard !odd.isEmpty else { continue }
            problems.append(
                "\(name): rank 0 has \(values[0]), "
                    + odd.map { "rank \($0) has \(values[$0])" }.joined(separator: ", "))
        }
        guard problems.isEmpty else { throw DistributedError.ranksDiffer(problems.joined(separator: "; ")) }
    }

    /// This rank's results of a pass over `loader`'s unpadded shard, gathered from all ranks into the order of the
    /// whole set (padding removed): what one process would have.
    func gatherShards(_ local: Tensor, loader: DataLoader) -> Tensor {
        guard group.size > 1 else { return local }
        let n = loader.itemCount, size = group.size, per = (n + size - 1) / size
        var mine = local
        if mine.shape[0] < per {
            mine = Tensor.cat([mine, Tensor.zeros([per - mine.shape[0]] + mine.shape.dropFirst(), dtype: mine.dtype)])
        }
        let all = group.allGather(mine)  // [size, per, …]: item k of rank r is position r + size·k
        let order = [1, 0] + Array(2..<all.rank)
        return all.permute(order).contiguous().reshape([size * per] + Array(local.shape.dropFirst()))[0..<n]
    }
}

/// FNV-1a of a string: a short fingerprint to compare between ranks.
private func digest(_ s: String) -> String {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return String(h, radix: 16)
}

/// Averages gradients across ranks as backward produces them (PyTorch DDP's `Reducer`): trainable parameters,
/// in reverse order, fill flat float32 buckets of at most `bucketBytes`; a bucket's all-reduce starts as soon as its
/// last gradient is complete, in bucket order on every rank, and runs while backward continues (the group's progress
/// thread drives it). ``finish()`` waits for the rest and hands each parameter its
/// averaged gradient.
final class GradientReducer {
    let group: ProcessGroup
    let bucketBytes: Int

    private struct Bucket {
        var params: [Parameter]
        var count: Int
        var ready = 0
        var work: AllReduceWork?
    }

    private var layout: [ObjectIdentifier] = []
    private var buckets: [Bucket] = []
    private var slots: [ObjectIdentifier: Int] = [:]
    private var next = 0
    /// Seconds spent blocked in ``finish()`` (communication backward did not hide), and all-reduces done.
    private(set) var exposedSeconds = 0.0, reductions = 0
    /// Gradient elements whose all-reduce completed before backward ended, and all of them.
    private var hiddenCount = 0, totalCount = 0
    var hiddenShare: Double { totalCount > 0 ? Double(hiddenCount) / Double(totalCount) : 0 }
    /// Inside ``Learner/noSync(_:)``: completed gradients stay local.
    var paused = false

    init(group: ProcessGroup, bucketBytes: Int) {
        require(bucketBytes > 0, "GradientReducer: bucket size must be positive, got \(bucketBytes) bytes")
        self.group = group
        self.bucketBytes = bucketBytes
    }

    /// Number of buckets of the current layout.
    var bucketCount: Int { buckets.count }

    /// Lays out the buckets for these trainable parameters (again only when they changed, e.g. after unfreezing).
    func prepare(_ params: [Parameter]) {
        let trainable = params.filter(\.requiresGrad).reversed()
        let key = trainable.map { ObjectIdentifier($0) }
        if key != layout {
            layout = key
            buckets = []
            var current: [Parameter] = [], bytes = 0
            for p in trainable {
                require(p.value.dtype == .float32, "GradientReducer: parameters must be float32, got \(p.value.dtype)")
                if !current.isEmpty && bytes + p.value.count * 4 > bucketBytes {
                    buckets.append(Bucket(params: current, count: current.reduce(0) { $0 + $1.value.count }))
                    current = []
                    bytes = 0
                }
                current.append(p)
                bytes += p.value.count * 4
            }
            if !current.isEmpty {
                buckets.append(Bucket(params: current, count: current.reduce(0) { $0 + $1.value.count }))
            }
        }
        slots = [:]
        for (i, b) in buckets.enumerated() {
            for p in b.params { if let k = p.value.gradKey { slots[k] = i } }
        }
        for i in buckets.indices {
            buckets[i].ready = 0
            buckets[i].work = nil
        }
        next = 0
    }

    /// Backward completed the gradient of the leaf `key`.
    func gradientReady(_ key: ObjectIdentifier) {
        guard !paused, let i = slots[key] else { return }
        require(
            i >= next && buckets[i].ready < buckets[i].params.count,
            "GradientReducer: a gradient was completed twice in one step (bucket \(i)); run every backward of a step "
                + "but the last inside learn.noSync { }")
        buckets[i].ready += 1
        launchReady()
    }

    private func launchReady(all: Bool = false) {
        while next < buckets.count && (all || buckets[next].ready == buckets[next].params.count) {
            let scale = 1 / Double(group.size)
            let flat = buckets[next].params.map { p in
                p.grad.map { ($0.detached() * scale).reshape([-1]) } ?? Tensor.zeros([p.value.count])
            }
            buckets[next].work = group.startAllReduce(Tensor.cat(flat))
            next += 1
        }
    }

    /// Starts what backward did not complete (parameters without a gradient this step count as zeros), waits for
    /// every bucket and sets each parameter's gradient to the average over ranks.
    func finish() {
        hiddenCount += buckets[..<next].filter { $0.work?.isComplete == true }.reduce(0) { $0 + $1.count }
        totalCount += buckets.reduce(0) { $0 + $1.count }
        launchReady(all: true)
        let start = DispatchTime.now().uptimeNanoseconds
        for b in buckets {
            guard let work = b.work else { continue }
            work.wait()
            var offset = 0
            for p in b.params {
                let n = p.value.count
                p.grad = work.tensor[offset..<(offset + n)].reshape(p.value.shape)
                offset += n
            }
        }
        exposedSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        reductions += 1
    }
}
