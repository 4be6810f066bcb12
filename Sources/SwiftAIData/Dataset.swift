import SwiftAICore

/// Items turned into collated batches: what a ``DataLoader`` draws from.
///
/// A dataset is shared by the loader's worker threads, so ``batch(_:seeds:training:)`` must be safe to call
/// concurrently. Item-level randomness (a random crop, say) draws from a generator seeded with the item's
/// entry in `seeds`, so a batch depends only on the loader's seed, epoch and batch index — never on which
/// worker built it.
public protocol Dataset: AnyObject {
    /// Number of items.
    var count: Int { get }
    /// The batch of items `indices`, in order. `seeds[k]` seeds item `k`'s random draws; `training` selects the
    /// training behaviour of item transforms (fastai's `split_idx`: random on training, deterministic otherwise).
    /// Items that cannot be loaded may be left out (the batch is then shorter); errors that must stop loading
    /// (strict mode, nothing loadable) are thrown.
    func batch(_ indices: [Int], seeds: [UInt64], training: Bool) throws -> Batch
}

/// Inputs and targets held in memory (first dimension indexes items).
public final class TensorDataset: Dataset {
    public let x: Tensor, y: Tensor

    public init(_ x: Tensor, _ y: Tensor) {
        require(
            x.rank >= 1 && y.rank >= 1 && x.shape[0] == y.shape[0],
            "TensorDataset: inputs \(x.shape) and targets \(y.shape) must have the same number of items")
        self.x = x
        self.y = y
    }

    public var count: Int { x.shape[0] }

    /// A slice when `indices` is a contiguous run, one gather otherwise.
    public func batch(_ indices: [Int], seeds: [UInt64], training: Bool) -> Batch {
        guard let first = indices.first else { return (x[0..<0], y[0..<0]) }
        if indices.last! - first + 1 == indices.count && zip(indices, indices.dropFirst()).allSatisfy({ $1 == $0 + 1 })
        {
            return (x[first..<(first + indices.count)], y[first..<(first + indices.count)])
        }
        let index = Tensor(indices.map(Int64.init))
        return (x.indexSelect(dim: 0, index: index), y.indexSelect(dim: 0, index: index))
    }
}

/// A transform of whole batches, run on the loader's worker after collation (fastai's `batch_tfms`).
///
/// Transforms are plain values composed by ``order`` as fastai orders them (`IntToFloat` 10, affine/coordinate
/// transforms 30, lighting 40, `Normalize` 99). Random transforms draw from the batch's `generator` and act only
/// when `training` is true, as fastai's `split_idx = 0`; deterministic ones (resize, normalisation) run on both.
public protocol BatchTransform: CustomStringConvertible {
    var order: Int { get }
    func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch
    /// A transform doing this one and the first `consumed` of `following` in one pass over the data, or `nil`.
    /// ``BatchPipeline`` asks once, when it is built; the fused result must equal applying them one by one.
    func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)?
    /// Undoes what can be undone for display (fastai's `decodes`: `Normalize` denormalises); default: unchanged.
    func decode(_ batch: Batch) -> Batch
}

extension BatchTransform {
    public func fused(with following: ArraySlice<BatchTransform>) -> (transform: BatchTransform, consumed: Int)? { nil }
    public var description: String { String(describing: type(of: self)) }
    public func decode(_ batch: Batch) -> Batch { batch }
}

/// A closure as a batch transform (fastai's `Transform(func)`); it runs on training and validation batches.
public struct BatchFunction: BatchTransform {
    public let order: Int
    public let name: String
    let body: (Batch) -> Batch

    public init(order: Int = 0, name: String = "BatchFunction", _ body: @escaping (Batch) -> Batch) {
        self.order = order
        self.name = name
        self.body = body
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch { body(batch) }
    public var description: String { name }
}

/// Batch transforms sorted by order (stable, as fastai's `Pipeline`), with fusable runs merged once.
public struct BatchPipeline: CustomStringConvertible {
    /// The transforms as given, in the order they run.
    public let transforms: [BatchTransform]
    /// What actually runs: ``transforms`` with fused runs merged.
    public let steps: [BatchTransform]

    public init(_ transforms: [BatchTransform]) {
        let sorted = transforms.enumerated().sorted { ($0.element.order, $0.offset) < ($1.element.order, $1.offset) }
            .map(\.element)
        self.transforms = sorted
        var steps: [BatchTransform] = []
        var i = 0
        while i < sorted.count {
            if let (t, k) = sorted[i].fused(with: sorted[(i + 1)...]) {
                steps.append(t)
                i += 1 + k
            } else {
                steps.append(sorted[i])
                i += 1
            }
        }
        self.steps = steps
    }

    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        steps.reduce(batch) { $1.apply($0, generator: generator, training: training) }
    }

    /// The batch as it was before the pipeline, as far as the transforms can decode (for showing it).
    public func decode(_ batch: Batch) -> Batch { transforms.reversed().reduce(batch) { $1.decode($0) } }

    public var description: String {
        transforms.isEmpty ? "(none)" : transforms.map(\.description).joined(separator: " -> ")
    }
}

/// Seeds derived from a loader seed: one stream per (epoch, batch) and per (epoch, position in the epoch).
public enum SeedMix {
    @inline(__always)
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var z = a &+ 0x9E37_79B9_7F4A_7C15 &* (b &+ 1)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The seed of batch `batch` of `epoch` (batch transforms draw from it), on rank `rank` of a distributed job.
    public static func batch(_ seed: UInt64, epoch: Int, batch: Int, rank: Int = 0) -> UInt64 {
        let s = mix(mix(seed ^ 0xB47C, UInt64(epoch)), UInt64(batch))
        return rank == 0 ? s : mix(s, UInt64(rank))
    }
    /// The seed of the item at `position` of `epoch` (item transforms draw from it).
    public static func item(_ seed: UInt64, epoch: Int, position: Int) -> UInt64 {
        mix(mix(seed ^ 0x17E3, UInt64(epoch)), UInt64(position))
    }
}
