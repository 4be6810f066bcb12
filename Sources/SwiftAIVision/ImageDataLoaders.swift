import SwiftAIData

/// fastai's `ImageDataLoaders` factories: a ``DataBlock`` for the common layouts in one call.
public enum ImageDataLoaders {
    /// Class folders: `path/train/<label>/…` and `path/valid/<label>/…` (fastai's `from_folder`), or, with
    /// `validPct`, every image below `path` split at random.
    public static func fromFolder(
        _ path: Path, train: String = "train", valid: String = "valid", validPct: Double? = nil,
        seed: UInt64? = nil, vocab: [String]? = nil, itemTfms: [ItemTransform] = [],
        batchTfms: [BatchTransform] = [], bs: Int = 64, valBs: Int? = nil, numWorkers: Int? = nil,
        strict: Bool = false
    ) throws -> DataLoaders {
        let splitter: Splitter =
            validPct.map { RandomSplitter(validPct: $0, seed: seed) } ?? GrandparentSplitter(train: train, valid: valid)
        let folders = validPct == nil ? [train, valid] : []
        let block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock(vocab: vocab)), getItems: { try getImageFiles($0, folders: folders) },
            splitter: splitter, getY: parentLabel, itemTfms: itemTfms, batchTfms: batchTfms)
        return try block.dataloaders(
            from: path, bs: bs, valBs: valBs, numWorkers: numWorkers, seed: seed, strict: strict)
    }

    /// Labels from the first group of `pattern` searched in each file name (fastai's `from_name_re`).
    public static func fromNameRe(
        _ path: Path, fnames: [Path], pattern: String, validPct: Double = 0.2, seed: UInt64? = nil,
        itemTfms: [ItemTransform] = [], batchTfms: [BatchTransform] = [], bs: Int = 64,
        valBs: Int? = nil, numWorkers: Int? = nil, strict: Bool = false
    ) throws -> DataLoaders {
        let re = try RegexLabeller(pattern)
        return try fromNameFunc(
            path, fnames: fnames, labelFunc: { try re($0) }, validPct: validPct, seed: seed, itemTfms: itemTfms,
            batchTfms: batchTfms, bs: bs, valBs: valBs, numWorkers: numWorkers, strict: strict)
    }

    /// Labels from a function of each file name (fastai's `from_name_func`).
    public static func fromNameFunc(
        _ path: Path, fnames: [Path], labelFunc: @escaping (String) throws -> String,
        validPct: Double = 0.2, seed: UInt64? = nil, itemTfms: [ItemTransform] = [],
        batchTfms: [BatchTransform] = [], bs: Int = 64, valBs: Int? = nil, numWorkers: Int? = nil,
        strict: Bool = false
    ) throws -> DataLoaders {
        try fromPathFunc(
            path, fnames: fnames, labelFunc: { try labelFunc($0.name) }, validPct: validPct, seed: seed,
            itemTfms: itemTfms, batchTfms: batchTfms, bs: bs, valBs: valBs, numWorkers: numWorkers, strict: strict)
    }

    /// Labels from a function of each path (fastai's `from_path_func`).
    public static func fromPathFunc(
        _ path: Path, fnames: [Path], labelFunc: @escaping (Path) throws -> String,
        validPct: Double = 0.2, seed: UInt64? = nil, itemTfms: [ItemTransform] = [],
        batchTfms: [BatchTransform] = [], bs: Int = 64, valBs: Int? = nil, numWorkers: Int? = nil,
        strict: Bool = false
    ) throws -> DataLoaders {
        let block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), getItems: { _ in fnames },
            splitter: RandomSplitter(validPct: validPct, seed: seed), getY: labelFunc,
            itemTfms: itemTfms, batchTfms: batchTfms)
        return try block.dataloaders(
            from: path, bs: bs, valBs: valBs, numWorkers: numWorkers, seed: seed, strict: strict)
    }
}
