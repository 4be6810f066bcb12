import SwiftAICore
import SwiftAIData

/// What turns images into a model's input batch — colour mode, item transforms, batch transforms — and the class
/// names of its outputs: everything an exported model carries besides its weights (fastai keeps these in the
/// exported learner's `dls`).
public struct InferencePipeline {
    public var mode: ImageMode
    public var itemTransforms: [ItemTransform]
    public var batchTransforms: [BatchTransform]
    public var vocab: [String]

    public init(mode: ImageMode, itemTransforms: [ItemTransform], batchTransforms: [BatchTransform], vocab: [String]) {
        self.mode = mode
        self.itemTransforms = itemTransforms
        self.batchTransforms = batchTransforms
        self.vocab = vocab
    }

    /// The pipeline of image loaders: the validation set's colour mode and item transforms, the validation
    /// loader's batch transforms (their evaluation path is what predictions use), the loaders' vocab.
    public init(_ dls: DataLoaders) throws {
        guard let ds = dls.valid.dataset as? ImageDataset else {
            throw DataBlockError.invalid(
                """
                the loaders do not hold image files (\(type(of: dls.valid.dataset))): describe their inputs with an \
                InferencePipeline
                """
            )
        }
        self.init(
            mode: ds.mode, itemTransforms: ds.itemTfms, batchTransforms: dls.valid.batchTransforms.transforms,
            vocab: dls.vocab)
    }

    /// Images prepared as ``DataLoaders/fashionMNIST(_:batchSize:seed:augment:)`` prepares the dataset's tensors:
    /// gray, squished to 28×28, `(x/255 − 0.28)/0.35`; `augment` (e.g. the random crop and flip of training, for
    /// test-time augmentation) runs after the normalisation, as there.
    public static func fashionMNIST(augment: [BatchTransform] = []) -> InferencePipeline {
        InferencePipeline(
            mode: .gray, itemTransforms: [Resize(28, method: .squish)],
            batchTransforms: [IntToFloat(), Normalize(mean: [FashionMNIST.mean], std: [FashionMNIST.std])]
                + augment.map(Self.afterNormalize),
            vocab: FashionMNIST.classes)
    }

    /// `t` reordered to run after ``Normalize`` (order 99), for the transforms whose order can be set.
    private static func afterNormalize(_ t: BatchTransform) -> BatchTransform {
        switch t {
        case var c as RandomCrop: c.order = 100; return c
        case var f as RandomFlip: f.order = 100; return f
        case var e as RandErase: e.order = max(e.order, 100); return e
        case var c as RandCopy: c.order = max(c.order, 100); return c
        default: return t
        }
    }

    /// Loaders without items that carry this pipeline: a learner built on them predicts (`predict`, `tta`) and
    /// evaluates loaders made with ``testDL(_:labels:batchSize:)``.
    public func dataLoaders(batchSize: Int = 64) -> DataLoaders {
        let empty = ImageDataset(
            items: [], targets: [], classes: vocab.count, multiLabel: false, mode: mode,
            itemTfms: itemTransforms, maxPixels: Image.defaultMaxPixels, strict: false, log: SkipLog())
        return DataLoaders(
            train: DataLoader(empty, batchSize: batchSize, shuffle: true, batchTransforms: batchTransforms),
            valid: DataLoader(empty, batchSize: batchSize, batchTransforms: batchTransforms), vocab: vocab)
    }

    /// A validation-mode loader over image files (fastai's `dls.test_dl`); with `labels` (class names, one per
    /// file) its targets are their indices in the vocab, else 0. A label outside the vocab throws.
    public func testDL(
        _ items: [Path], labels: [String]? = nil, batchSize: Int = 64, maxPixels: Int = Image.defaultMaxPixels,
        workers: Int = 1
    ) throws -> DataLoader {
        let targets = try indices(labels, count: items.count)
        let ds = ImageDataset(
            items: items, targets: targets.map { [$0] }, classes: vocab.count, multiLabel: false, mode: mode,
            itemTfms: itemTransforms, maxPixels: maxPixels, strict: false, log: SkipLog())
        return DataLoader(ds, batchSize: batchSize, numWorkers: workers, batchTransforms: batchTransforms)
    }

    /// ``testDL(_:labels:batchSize:maxPixels:workers:)`` over decoded images (converted to this pipeline's mode).
    public func testDL(images: [Image], labels: [String]? = nil, batchSize: Int = 64) throws -> DataLoader {
        let ds = InMemoryImageDataset(
            images: images, targets: try indices(labels, count: images.count), mode: mode,
            itemTransforms: itemTransforms)
        return DataLoader(ds, batchSize: batchSize, numWorkers: 1, batchTransforms: batchTransforms)
    }

    /// The `[C, H, W]` this pipeline makes of any image, or nil when it depends on the image's size (then images
    /// cannot share a batch unless they share a size).
    public var inputSize: [Int]? {
        let shapes = [(64, 48), (37, 91)].compactMap { w, h in
            try? batch([Image(width: w, height: h, channels: mode.channels)]).shape
        }
        guard shapes.count == 2, shapes[0] == shapes[1] else { return nil }
        return Array(shapes[0].dropFirst())
    }

    /// The input batch for `images` (validation path): item transforms, collation, batch transforms.
    public func batch(_ images: [Image]) throws -> Tensor { try batch(prepared: images.map(prepare)) }

    /// `image` in this pipeline's mode after the item transforms (validation path).
    public func prepare(_ image: Image) -> Image {
        let g = Generator(seed: 0)
        return itemTransforms.reduce(image.converted(to: mode)) { $1.apply($0, generator: g, training: false) }
    }

    /// The input batch for images already ``prepare(_:)``d: collation, then the batch transforms.
    public func batch(prepared images: [Image]) throws -> Tensor {
        let x = try collate(images)
        return BatchPipeline(batchTransforms).apply(
            (x, Tensor.zeros([images.count], dtype: .int64)), generator: Generator(seed: 0),
            training: false
        ).x
    }

    private func indices(_ labels: [String]?, count: Int) throws -> [Int] {
        guard let labels else { return Array(repeating: 0, count: count) }
        guard labels.count == count else { throw DataBlockError.invalid("\(labels.count) labels for \(count) items") }
        let index = Dictionary(vocab.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        return try labels.map { l in
            guard let i = index[l] else {
                throw DataBlockError.invalid(
                    """
                    label '\(l)' is not one of the model's \(vocab.count) classes \
                    (\(vocab.prefix(10).joined(separator: ", "))\(vocab.count > 10 ? ", …" : ""))
                    """
                )
            }
            return i
        }
    }
}

/// Decoded images in memory with class targets, item transforms applied per batch.
final class InMemoryImageDataset: Dataset {
    let images: [Image]
    let targets: [Int]
    let itemTransforms: [ItemTransform]

    init(images: [Image], targets: [Int], mode: ImageMode, itemTransforms: [ItemTransform]) {
        self.images = images.map { $0.converted(to: mode) }
        self.targets = targets
        self.itemTransforms = itemTransforms
    }

    var count: Int { images.count }

    func batch(_ indices: [Int], seeds: [UInt64], training: Bool) throws -> Batch {
        let items = zip(indices, seeds).map { i, s in
            let g = Generator(seed: s)
            return itemTransforms.reduce(images[i]) { $1.apply($0, generator: g, training: training) }
        }
        return (try collate(items), Tensor(indices.map { Int64(targets[$0]) }))
    }
}

extension Image {
    /// This image with `mode`'s channel count (gray → RGB repeats the channel; RGB → gray is PIL's `L`).
    public func converted(to mode: ImageMode) -> Image {
        if channels == mode.channels { return self }
        return mode == .rgb ? replicatedGray() : luma()
    }
}
