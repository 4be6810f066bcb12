import Foundation
import SwiftAICore

/// A mini-batch: inputs and targets.
public typealias Batch = (x: Tensor, y: Tensor)

/// Batches over in-memory tensors, prepared ahead of the model on a background thread.
///
/// Shuffling is a pure function of `(seed, epoch)`: epoch `e` of a loader with seed `s` always visits items in
/// the same order, whatever ran before — two trainings with the same seed see identical batches, and nothing
/// carries over from one `Learner` to the next. The ``Learner`` sets ``epoch`` before each epoch.
public final class DataLoader: Sequence {
    /// Inputs (first dimension indexes items) and targets.
    public let x: Tensor, y: Tensor
    public let batchSize: Int
    public let shuffle: Bool
    public let dropLast: Bool
    public let seed: UInt64
    /// Applied to every batch on the loading thread (e.g. `uint8 → normalised float32`, augmentation).
    public let transform: ((Batch) -> Batch)?
    /// Batches prepared ahead of the consumer (0 loads on the consumer's thread).
    public let prefetch: Int
    /// Selects this epoch's shuffle.
    public var epoch = 0
    /// Stops each epoch after this many batches (quick runs, like the reference script's `--limit-batches`).
    public var maxBatches: Int?

    public init(_ x: Tensor, _ y: Tensor, batchSize: Int, shuffle: Bool = false, dropLast: Bool = false, seed: UInt64 = 0,
                prefetch: Int = 2, transform: ((Batch) -> Batch)? = nil) {
        require(x.rank >= 1 && y.rank >= 1 && x.shape[0] == y.shape[0],
                "DataLoader: inputs \(x.shape) and targets \(y.shape) must have the same number of items")
        require(batchSize > 0, "DataLoader: batch size must be positive, got \(batchSize)")
        self.x = x
        self.y = y
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.dropLast = dropLast
        self.seed = seed
        self.prefetch = prefetch
        self.transform = transform
    }

    /// Number of items.
    public var itemCount: Int { x.shape[0] }

    /// Number of batches per epoch.
    public var count: Int {
        let full = dropLast ? itemCount / batchSize : (itemCount + batchSize - 1) / batchSize
        return Swift.min(full, maxBatches ?? full)
    }

    /// Item order for the current epoch.
    public func order() -> [Int] {
        shuffle ? SwiftAICore.Generator(seed: seed &+ 0x9E37_79B9 &* UInt64(epoch + 1)).permutation(itemCount) : Array(0..<itemCount)
    }

    /// The `i`-th batch of an epoch with item order `order`.
    func batch(_ i: Int, order: [Int]) -> Batch {
        let idx = Array(order[(i * batchSize)..<Swift.min(itemCount, (i + 1) * batchSize)])
        let contiguousRange = idx.last.map { $0 - idx[0] + 1 == idx.count } ?? false
        let b: Batch
        if contiguousRange && idx.count > 0 {
            b = (x[idx[0]..<(idx[0] + idx.count)], y[idx[0]..<(idx[0] + idx.count)])
        } else {
            let index = Tensor(idx.map(Int64.init))
            b = (x.indexSelect(dim: 0, index: index), y.indexSelect(dim: 0, index: index))
        }
        return transform?(b) ?? b
    }

    /// One batch without iterating (the first of the current epoch), e.g. for a dry run.
    public func first() -> Batch { batch(0, order: order()) }

    public func makeIterator() -> Iterator { Iterator(self) }

    /// Yields the epoch's batches; a background thread keeps up to `prefetch` of them ready.
    public final class Iterator: IteratorProtocol {
        private let loader: DataLoader
        private let order: [Int]
        private var next_ = 0
        private let queue: PrefetchQueue?

        init(_ loader: DataLoader) {
            self.loader = loader
            order = loader.order()
            if loader.prefetch > 0 && loader.count > 1 {
                let q = PrefetchQueue(capacity: loader.prefetch)
                queue = q
                let n = loader.count, order = self.order
                let thread = Thread {
                    // The loader's own ops stay on this thread: the cores belong to the model.
                    Parallel.$isSerial.withValue(true) {
                        noGrad {
                            for i in 0..<n {
                                if q.cancelled { break }
                                q.push(loader.batch(i, order: order))
                            }
                        }
                    }
                    q.finish()
                    q.exited.signal()
                }
                thread.stackSize = 8 << 20
                thread.start()
            } else {
                queue = nil
            }
        }

        public func next() -> Batch? {
            guard next_ < loader.count else { return nil }
            defer { next_ += 1 }
            if let queue { return queue.pop() }
            return noGrad { loader.batch(next_, order: order) }
        }

        /// Stops the loading thread and waits for it, so no batch outlives the iteration.
        deinit {
            guard let queue else { return }
            queue.cancel()
            queue.exited.wait()
        }
    }
}

/// A bounded producer/consumer queue of batches.
final class PrefetchQueue: @unchecked Sendable {
    private var items: [Batch] = []
    private let capacity: Int
    private let cond = NSCondition()
    private(set) var cancelled = false
    private var finished = false
    /// Signalled when the producing thread has returned.
    let exited = DispatchSemaphore(value: 0)

    init(capacity: Int) { self.capacity = capacity }

    func push(_ b: Batch) {
        cond.lock()
        while items.count >= capacity && !cancelled { cond.wait() }
        if !cancelled { items.append(b) }
        cond.broadcast()
        cond.unlock()
    }

    func pop() -> Batch? {
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

/// A training and a validation loader.
public struct DataLoaders {
    public var train: DataLoader
    public var valid: DataLoader

    public init(train: DataLoader, valid: DataLoader) {
        self.train = train
        self.valid = valid
    }

    /// Fashion-MNIST as the lesson loads it: normalised `[B, 1, 28, 28]` float batches, shuffled training
    /// batches of `batchSize`, validation in order with the same batch size (as the reference script; fastai
    /// doubles it, but equal sizes let validation reuse the training step's cached memory).
    public static func fashionMNIST(_ ds: FashionMNIST, batchSize: Int, seed: UInt64 = 0,
                                    augment: ((Batch) -> Batch)? = nil) -> DataLoaders {
        let prep: (Batch) -> Batch = { b in (FashionMNIST.normalise(b.x).unsqueeze(1), b.y) }
        let trainPrep: (Batch) -> Batch = augment.map { aug in { aug(prep($0)) } } ?? prep
        return DataLoaders(train: DataLoader(ds.trainImages, ds.trainLabels, batchSize: batchSize, shuffle: true, seed: seed,
                                             transform: trainPrep),
                           valid: DataLoader(ds.testImages, ds.testLabels, batchSize: batchSize, transform: prep))
    }
}
