import Foundation
import SwiftAICore
import SwiftAIData

/// Images as the input block (fastai's `ImageBlock`; `.gray` as `ImageBlock(cls=PILImageBW)`). It adds
/// ``IntToFloat`` to the batch transforms, as fastai does.
public struct ImageBlock: Sendable {
    public let mode: ImageMode
    public init(_ mode: ImageMode = .rgb) { self.mode = mode }
}

/// One class per item: `int64` targets indexing a vocab sorted from the training split (fastai's `CategoryBlock`).
public struct CategoryBlock: Sendable {
    /// A fixed vocab (its order kept); `nil` builds the sorted vocab of the training labels.
    public let vocab: [String]?
    public init(vocab: [String]? = nil) { self.vocab = vocab }
}

/// Any number of classes per item: multi-hot `float32` targets (fastai's `MultiCategoryBlock`).
public struct MultiCategoryBlock: Sendable {
    public let vocab: [String]?
    public init(vocab: [String]? = nil) { self.vocab = vocab }
}

/// fastai's `DataBlock` for images: how to get items, split them, label them, and transform them.
public struct DataBlock {
    public let imageBlock: ImageBlock
    public let multiLabel: Bool
    public let fixedVocab: [String]?
    public let getItems: (Path) throws -> [Path]
    public let splitter: Splitter
    public let getX: ((Path) -> Path)?
    let getLabels: (Path) throws -> [String]
    /// Item transforms, sorted by order (fastai's `item_tfms`).
    public let itemTfms: [ItemTransform]
    /// Batch transforms after the block's ``IntToFloat`` (fastai's `batch_tfms`).
    public let batchTfms: [BatchTransform]
    /// Images over this many pixels are refused (decompression-bomb guard).
    public var maxPixels = Image.defaultMaxPixels

    /// Single-label classification.
    public init(
        blocks: (ImageBlock, CategoryBlock), getItems: @escaping (Path) throws -> [Path] = { try getImageFiles($0) },
        splitter: Splitter = RandomSplitter(), getX: ((Path) -> Path)? = nil,
        getY: @escaping (Path) throws -> String, itemTfms: [ItemTransform] = [], batchTfms: [BatchTransform] = []
    ) {
        self.init(
            blocks.0, multi: false, vocab: blocks.1.vocab, getItems, splitter, getX, { [try getY($0)] }, itemTfms,
            batchTfms)
    }

    /// Multi-label classification: `getY` gives every label of an item.
    public init(
        blocks: (ImageBlock, MultiCategoryBlock),
        getItems: @escaping (Path) throws -> [Path] = { try getImageFiles($0) },
        splitter: Splitter = RandomSplitter(), getX: ((Path) -> Path)? = nil,
        getY: @escaping (Path) throws -> [String], itemTfms: [ItemTransform] = [], batchTfms: [BatchTransform] = []
    ) {
        self.init(blocks.0, multi: true, vocab: blocks.1.vocab, getItems, splitter, getX, getY, itemTfms, batchTfms)
    }

    init(
        _ image: ImageBlock, multi: Bool, vocab: [String]?, _ getItems: @escaping (Path) throws -> [Path],
        _ splitter: Splitter,
        _ getX: ((Path) -> Path)?, _ getLabels: @escaping (Path) throws -> [String], _ itemTfms: [ItemTransform],
        _ batchTfms: [BatchTransform]
    ) {
        imageBlock = image
        multiLabel = multi
        fixedVocab = vocab
        self.getItems = getItems
        self.splitter = splitter
        self.getX = getX
        self.getLabels = getLabels
        self.itemTfms = itemTfms.enumerated().sorted { ($0.element.order, $0.offset) < ($1.element.order, $1.offset) }
            .map(\.element)
        self.batchTfms = batchTfms
    }

    /// The batch transforms that run: the block's ``IntToFloat``, then ``batchTfms`` (sorted by order by the loader).
    public var allBatchTfms: [BatchTransform] { [IntToFloat()] + batchTfms }

    /// Items, split and labels, checked: no items, an empty training set, an unmatched label pattern or a
    /// label seen only in validation throw before any image is decoded.
    public func datasets(_ source: Path, strict: Bool = false) throws -> Datasets {
        let items = try getItems(source)
        guard !items.isEmpty else { throw DataBlockError.noItems(source, what: "image files") }
        let (trainIdx, validIdx) = try splitter.split(items)
        guard !trainIdx.isEmpty else {
            throw DataBlockError.emptySplit(which: "training", detail: "\(items.count) items, \(splitter)")
        }
        let labels = try items.map { try getLabels($0) }
        let vocab = fixedVocab ?? Array(Set(trainIdx.flatMap { labels[$0] })).sorted()
        let index = Dictionary(uniqueKeysWithValues: vocab.enumerated().map { ($1, $0) })
        func encode(_ i: Int) throws -> [Int] {
            try labels[i].map { label in
                guard let k = index[label] else {
                    throw DataBlockError.labelOnlyInValidation(label: label, item: items[i].string)
                }
                return k
            }
        }
        let log = SkipLog()
        func make(_ idx: [Int]) throws -> ImageDataset {
            ImageDataset(
                items: idx.map { getX?(items[$0]) ?? items[$0] }, targets: try idx.map(encode), classes: vocab.count,
                multiLabel: multiLabel, mode: imageBlock.mode, itemTfms: itemTfms, maxPixels: maxPixels, strict: strict,
                log: log)
        }
        return Datasets(items: items, train: try make(trainIdx), valid: try make(validIdx), vocab: vocab, log: log)
    }

    /// Training (shuffled, drop-last, random transforms) and validation (in order, deterministic) loaders.
    ///
    /// - Parameters:
    ///   - valBs: validation batch size (default `bs`, as fastai 2).
    ///   - numWorkers: decoding threads (default: the number of cores, shared among the ranks of a distributed job on
    ///     this host).
    ///   - seed: shuffling and augmentation (default: random, as fastai).
    ///   - strict: an unreadable image stops loading instead of being skipped with a warning.
    public func dataloaders(
        from source: Path, bs: Int = 64, valBs: Int? = nil, numWorkers: Int? = nil, seed: UInt64? = nil,
        strict: Bool = false
    ) throws -> DataLoaders {
        let ds = try datasets(source, strict: strict)
        let workers =
            numWorkers
            ?? Swift.max(1, ProcessInfo.processInfo.activeProcessorCount / (ProcessGroup.active?.localSize ?? 1))
        let s = seed ?? UInt64.random(in: 0...UInt64.max)
        let train = DataLoader(
            ds.train, batchSize: bs, shuffle: true, dropLast: true, seed: s, training: true,
            numWorkers: workers, batchTransforms: allBatchTfms)
        let valid = DataLoader(
            ds.valid, batchSize: valBs ?? bs, seed: s, training: false, numWorkers: workers,
            batchTransforms: allBatchTfms)
        return DataLoaders(train: train, valid: valid, vocab: ds.vocab)
    }
}

/// The training and validation datasets of a ``DataBlock``.
public struct Datasets {
    /// Every item found, before the split.
    public let items: [Path]
    public let train: ImageDataset, valid: ImageDataset
    public let vocab: [String]
    let log: SkipLog
    /// Files skipped so far because they could not be decoded, with the decoder's reason.
    public var skipped: [(path: String, reason: String)] { log.entries }
}

/// Image files with encoded targets: decoding and item transforms per item, collated into a `uint8` batch
/// `[B, C, H, W]` with channels-last strides.
public final class ImageDataset: Dataset {
    public let items: [Path]
    /// Class indices of each item.
    public let targets: [[Int]]
    public let classes: Int
    public let multiLabel: Bool
    public let mode: ImageMode
    public let itemTfms: [ItemTransform]
    public let maxPixels: Int
    public let strict: Bool
    let log: SkipLog

    init(
        items: [Path], targets: [[Int]], classes: Int, multiLabel: Bool, mode: ImageMode, itemTfms: [ItemTransform],
        maxPixels: Int, strict: Bool, log: SkipLog
    ) {
        self.items = items
        self.targets = targets
        self.classes = classes
        self.multiLabel = multiLabel
        self.mode = mode
        self.itemTfms = itemTfms
        self.maxPixels = maxPixels
        self.strict = strict
        self.log = log
    }

    public var count: Int { items.count }

    /// Decodes item `i` (already scaled when the first item transform allows) without item transforms.
    public func decode(_ i: Int) throws -> Image {
        let first = itemTfms.first
        return try Image.read(
            items[i].string, mode: mode, maxPixels: maxPixels,
            neededSize: first.map { t in { t.neededSourceSize(width: $0, height: $1) } })
    }

    /// Item `i` after the item transforms, drawing from `seed`.
    public func image(_ i: Int, seed: UInt64, training: Bool) throws -> Image {
        let g = Generator(seed: seed)
        return itemTfms.reduce(try decode(i)) { $1.apply($0, generator: g, training: training) }
    }

    /// The target tensor of items `idx`: `int64 [B]`, or multi-hot `float32 [B, classes]`.
    public func target(_ idx: [Int]) -> Tensor {
        if !multiLabel { return Tensor(idx.map { Int64(targets[$0][0]) }) }
        var hot = [Float](repeating: 0, count: idx.count * classes)
        for (r, i) in idx.enumerated() { for k in targets[i] { hot[r * classes + k] = 1 } }
        return Tensor(hot, shape: [idx.count, classes])
    }

    public func batch(_ indices: [Int], seeds: [UInt64], training: Bool) throws -> Batch {
        var images: [Image] = [], kept: [Int] = []
        for (k, i) in indices.enumerated() {
            do {
                images.append(try image(i, seed: seeds[k], training: training))
                kept.append(i)
            } catch let e as ImageError {
                if strict { throw e }
                log.skip(e)
            }
        }
        guard !images.isEmpty else { throw DataBlockError.noLoadableItems(skipped: indices.map { items[$0].string }) }
        return (try collate(images), target(kept))
    }
}

/// Stacks equally sized images into a `uint8` tensor `[B, C, H, W]` with channels-last strides; different sizes
/// throw fastai's collate message with every shape.
public func collate(_ images: [Image]) throws -> Tensor {
    let f = images[0]
    guard images.allSatisfy({ $0.width == f.width && $0.height == f.height && $0.channels == f.channels }) else {
        throw DataBlockError.collate(shapes: images.map { [$0.channels, $0.height, $0.width] })
    }
    let per = f.pixels.count
    // every byte is written below
    let out = Tensor.uninitialized([images.count, f.height, f.width, f.channels], dtype: .uint8)
    let dst = out.pointer(UInt8.self)
    for (k, img) in images.enumerated() {
        img.pixels.withUnsafeBufferPointer { src in
            if per > 0 { (dst + k * per).update(from: src.baseAddress!, count: per) }
        }
    }
    return out.permute([0, 3, 1, 2])
}

/// Files that could not be decoded: each is reported once on standard error.
final class SkipLog: @unchecked Sendable {
    private var seen: [String: String] = [:]
    private var order: [String] = []
    private let lock = NSLock()

    func skip(_ e: ImageError) {
        lock.lock()
        let first = seen[e.path] == nil
        if first {
            seen[e.path] = "\(e)"
            order.append(e.path)
        }
        lock.unlock()
        if first { FileHandle.standardError.write(Data("warning: skipping an image: \(e)\n".utf8)) }
    }

    var entries: [(path: String, reason: String)] {
        lock.lock()
        defer { lock.unlock() }
        return order.map { ($0, seen[$0]!) }
    }
}
