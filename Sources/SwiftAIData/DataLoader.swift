import Foundation
import SwiftAICore

/// A mini-batch: inputs and targets.
public typealias Batch = (x: Tensor, y: Tensor)

/// Batches of a ``Dataset``, built by worker threads ahead of the consumer.
///
/// Worker `w` of `n` builds batches `w, w + n, w + 2n, …` of an epoch (item loading, item transforms, collation,
/// then the batch transforms) and keeps at most `prefetch` of them ready; the consumer takes them in order. Every
/// random draw is seeded by `(seed, epoch, batch)` or `(seed, epoch, position)`, so an epoch's batches are the same
/// whatever the number of workers, and memory stays at `numWorkers × prefetch` batches.
///
/// Shuffling is a pure function of `(seed, epoch)`: epoch `e` of a loader with seed `s` always visits items in
/// the same order, whatever ran before. The ``Learner`` sets ``epoch`` before each epoch.
public final class DataLoader: Sequence {
    public let dataset: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let dropLast: Bool
    public let seed: UInt64
    /// Whether item and batch transforms take their training (random) path — fastai's `split_idx == 0`.
    public let training: Bool
    /// Transforms of whole batches, in the order they run.
    public private(set) var batchTransforms: BatchPipeline
    /// Threads building batches; 0 builds them on the consumer's thread.
    public let numWorkers: Int
    /// Batches each worker keeps ready.
    public let prefetch: Int
    /// Selects this epoch's shuffle and random draws.
    public var epoch = 0
    /// Stops each epoch after this many batches (quick runs, like the reference script's `--limit-batches`).
    public var maxBatches: Int?
    /// This process's part of every epoch in a job of several (set by `Learner.distributed`); `nil`: all of it.
    public var shard: Shard?

    /// Rank `rank` of `count` takes positions `rank, rank + count, …` of each epoch's order, in batches of
    /// `batchSize / count` (PyTorch's `DistributedSampler`): batch `i` of all ranks together holds the items of batch
    /// `i` of one process, so a job of any size walks the epoch in the same global batches. `padded`: the order is
    /// extended by wrap-around to a multiple of `count`, so every rank runs the same number of steps (training);
    /// otherwise ranks hold up to one item less (validation, whose results are reduced once at the end).
    public struct Shard: Equatable, Sendable {
        public let rank: Int, count: Int, padded: Bool
        public init(rank: Int, count: Int, padded: Bool) {
            require(count > 0 && rank >= 0 && rank < count, "DataLoader.Shard: rank \(rank) of \(count)")
            (self.rank, self.count, self.padded) = (rank, count, padded)
        }
    }

    /// - Parameters:
    ///   - training: random transforms act (default: `shuffle`, as fastai's training loader is the shuffled one).
    ///   - numWorkers: worker threads (0: load on the consumer's thread).
    public init(
        _ dataset: Dataset, batchSize: Int, shuffle: Bool = false, dropLast: Bool = false, seed: UInt64 = 0,
        training: Bool? = nil, numWorkers: Int = 1, prefetch: Int = 2, batchTransforms: [BatchTransform] = []
    ) {
        require(batchSize > 0, "DataLoader: batch size must be positive, got \(batchSize)")
        require(
            numWorkers >= 0 && prefetch >= 1,
            "DataLoader: numWorkers \(numWorkers) must be ≥ 0 and prefetch \(prefetch) ≥ 1")
        self.dataset = dataset
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.dropLast = dropLast
        self.seed = seed
        self.training = training ?? shuffle
        self.numWorkers = numWorkers
        self.prefetch = prefetch
        self.batchTransforms = BatchPipeline(batchTransforms)
    }

    /// Batches over in-memory tensors; `transform` runs on each batch (e.g. `uint8 → normalised float32`), and
    /// `prefetch: 0` builds batches on the consumer's thread.
    public convenience init(
        _ x: Tensor, _ y: Tensor, batchSize: Int, shuffle: Bool = false, dropLast: Bool = false,
        seed: UInt64 = 0, prefetch: Int = 2, transform: ((Batch) -> Batch)? = nil
    ) {
        self.init(
            TensorDataset(x, y), batchSize: batchSize, shuffle: shuffle, dropLast: dropLast, seed: seed,
            numWorkers: prefetch > 0 ? 1 : 0, prefetch: Swift.max(prefetch, 1),
            batchTransforms: transform.map { [BatchFunction($0)] } ?? [])
    }

    /// Adds batch transforms (fastai's `add_tfms(…, 'after_batch')`); they take their place by order.
    public func addBatchTransforms(_ transforms: [BatchTransform]) {
        batchTransforms = BatchPipeline(batchTransforms.transforms + transforms)
    }

    /// A loader over the same dataset and transforms with other settings (fastai's `dl.new`), e.g. the validation
    /// set in order with the training transforms for test-time augmentation.
    public func new(shuffle: Bool = false, dropLast: Bool = false, seed: UInt64? = nil, training: Bool? = nil)
        -> DataLoader
    {
        DataLoader(
            dataset, batchSize: batchSize, shuffle: shuffle, dropLast: dropLast, seed: seed ?? self.seed,
            training: training ?? self.training, numWorkers: numWorkers, prefetch: prefetch,
            batchTransforms: batchTransforms.transforms)
    }

    /// Number of items (of the whole dataset; ``localItemCount`` is this process's share).
    public var itemCount: Int { dataset.count }

    /// Items this process visits per epoch: ``itemCount``, or its shard's part.
    public var localItemCount: Int {
        guard let shard else { return itemCount }
        let per = (itemCount + shard.count - 1) / shard.count
        return shard.padded || shard.rank < itemCount - (per - 1) * shard.count ? per : per - 1
    }

    /// Items per batch on this process: ``batchSize``, divided among the shards of a distributed job.
    public var localBatchSize: Int { Swift.max(1, batchSize / (shard?.count ?? 1)) }

    /// Number of batches per epoch.
    public var count: Int {
        let n = localItemCount, b = localBatchSize
        let full = dropLast ? n / b : (n + b - 1) / b
        return Swift.min(full, maxBatches ?? full)
    }

    /// Item order for the current epoch (this process's part of it, with a ``shard``).
    public func order() -> [Int] { plan().items }

    /// The current epoch's items for this process and their positions in the whole epoch's order (which seed their
    /// random draws, so an item is transformed alike whatever the number of processes).
    func plan() -> (items: [Int], positions: [Int]) {
        let all =
            shuffle
            ? SwiftAICore.Generator(seed: seed &+ 0x9E37_79B9 &* UInt64(epoch + 1)).permutation(itemCount)
            : Array(0..<itemCount)
        guard let shard, itemCount > 0 else { return (all, Array(all.indices)) }
        let positions = Array(stride(from: shard.rank, to: shard.rank + localItemCount * shard.count, by: shard.count))
        return (positions.map { all[$0 % itemCount] }, positions)
    }

    /// The `i`-th batch of `epoch` with item order `plan`: items, collation, then batch transforms.
    func batch(_ i: Int, plan: (items: [Int], positions: [Int]), epoch: Int) throws -> Batch {
        let b = localBatchSize
        let range = (i * b)..<Swift.min(plan.items.count, (i + 1) * b)
        let seeds = range.map { SeedMix.item(seed, epoch: epoch, position: plan.positions[$0]) }
        let batch = try dataset.batch(Array(plan.items[range]), seeds: seeds, training: training)
        // Each rank's batch draws its own batch-level randomness.
        let g = SwiftAICore.Generator(seed: SeedMix.batch(seed, epoch: epoch, batch: i, rank: shard?.rank ?? 0))
        return batchTransforms.apply(batch, generator: g, training: training)
    }

    /// One batch without iterating (the first of the current epoch), e.g. for a dry run.
    public func first() throws -> Batch { try noGrad { try batch(0, plan: plan(), epoch: epoch) } }

    public func makeIterator() -> Iterator { Iterator(self) }

    /// This epoch's batches from batch `start` on (a resumed run skips those it already trained on; each batch is
    /// the one a full iteration would give).
    public func makeIterator(from start: Int) -> Iterator { Iterator(self, from: start) }

    /// Yields the epoch's batches. ``nextBatch()`` throws what loading threw; `next()` (for `for … in`) ends the
    /// iteration instead and keeps the error in ``error``.
    public final class Iterator: IteratorProtocol {
        private let loader: DataLoader
        private let plan: (items: [Int], positions: [Int])
        private let epoch: Int
        private let total: Int
        private var next_ = 0
        private let first: Int
        private let queues: [PrefetchQueue]
        /// What stopped a `for … in` iteration early, if anything.
        public private(set) var error: Error?

        init(_ loader: DataLoader, from start: Int = 0) {
            self.loader = loader
            plan = loader.plan()
            epoch = loader.epoch
            total = loader.count
            next_ = Swift.min(Swift.max(start, 0), total)
            first = next_
            let workers = Swift.min(loader.numWorkers, total - next_)
            queues = (0..<workers).map { _ in PrefetchQueue(capacity: loader.prefetch) }
            for (w, q) in queues.enumerated() {
                let plan = self.plan, epoch = self.epoch, total = self.total, first = next_
                let thread = Thread {
                    // Loader threads stay serial: the cores belong to the model and the other workers.
                    Parallel.$isSerial.withValue(true) {
                        noGrad {
                            for i in stride(from: first + w, to: total, by: workers) {
                                if q.cancelled { break }
                                q.push(Result { try loader.batch(i, plan: plan, epoch: epoch) })
                            }
                        }
                    }
                    q.finish()
                    q.exited.signal()
                }
                thread.stackSize = 8 << 20
                thread.start()
            }
        }

        /// The next batch, `nil` at the end of the epoch; throws when a batch could not be built.
        public func nextBatch() throws -> Batch? {
            guard next_ < total else { return nil }
            defer { next_ += 1 }
            if queues.isEmpty { return try noGrad { try loader.batch(next_, plan: plan, epoch: epoch) } }
            guard let r = queues[(next_ - first) % queues.count].pop() else { return nil }
            return try r.get()
        }

        public func next() -> Batch? {
            guard error == nil else { return nil }
            do { return try nextBatch() } catch {
                self.error = error
                return nil
            }
        }

        /// Stops the loading threads and waits for them, so no batch outlives the iteration.
        deinit {
            for q in queues { q.cancel() }
            for q in queues { q.exited.wait() }
        }
    }
}

/// A bounded producer/consumer queue of built batches.
final class PrefetchQueue: @unchecked Sendable {
    private var items: [Result<Batch, Error>] = []
    private let capacity: Int
    private let cond = NSCondition()
    private(set) var cancelled = false
    private var finished = false
    /// Signalled when the producing thread has returned.
    let exited = DispatchSemaphore(value: 0)

    init(capacity: Int) { self.capacity = capacity }

    func push(_ b: Result<Batch, Error>) {
        cond.lock()
        while items.count >= capacity && !cancelled { cond.wait() }
        if !cancelled { items.append(b) }
        cond.broadcast()
        cond.unlock()
    }

    func pop() -> Result<Batch, Error>? {
        cond.lock()
        defer { cond.unlock() }
        while items.isEmpty && !finished { cond.wait() }
        guard !items.isEmpty else { return nil }
        let b = items.removeFirst()
        cond.broadcast()
        return b
    }

    func finish() {
        cond.lock()
        finished = true
        cond.broadcast()
        cond.unlock()
    }

    func cancel() {
        cond.lock()
        cancelled = true
        items.removeAll()
        cond.broadcast()
        cond.unlock()
    }
}

/// A training and a validation loader, and the category names when the targets are classes.
public struct DataLoaders {
    public var train: DataLoader
    public var valid: DataLoader
    /// Class names, index = target value (fastai's `dls.vocab`); empty when not known.
    public var vocab: [String]

    public init(train: DataLoader, valid: DataLoader, vocab: [String] = []) {
        self.train = train
        self.valid = valid
        self.vocab = vocab
    }

    /// Number of classes (fastai's `dls.c`).
    public var c: Int { vocab.count }

    /// Fashion-MNIST as the lesson loads it: normalised `[B, 1, 28, 28]` float batches, shuffled training
    /// batches of `batchSize`, validation in order with the same batch size (as the reference script; fastai
    /// doubles it, but equal sizes let validation reuse the training step's cached memory). `augment` adds
    /// training-batch transforms (e.g. ``RandomCrop`` and ``RandomFlip``); as in fastai, the validation loader
    /// carries them too but takes their evaluation path (unchanged), so test-time augmentation can use them.
    public static func fashionMNIST(
        _ ds: FashionMNIST, batchSize: Int, seed: UInt64 = 0,
        augment: [BatchTransform] = []
    ) -> DataLoaders {
        let prep = BatchFunction(order: 10, name: "FashionMNIST.normalise") { b in
            (FashionMNIST.normalise(b.x).unsqueeze(1), b.y)
        }
        return DataLoaders(
            train: DataLoader(
                TensorDataset(ds.trainImages, ds.trainLabels), batchSize: batchSize, shuffle: true,
                seed: seed, batchTransforms: [prep] + augment),
            valid: DataLoader(
                TensorDataset(ds.testImages, ds.testLabels), batchSize: batchSize,
                batchTransforms: [prep] + augment),
            vocab: FashionMNIST.classes)
    }
}
