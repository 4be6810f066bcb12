import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAITestSupport
@testable import SwiftAIVision

/// A small pets-style folder: `images/<label>_<n>.{jpg,png}` of several sizes, gray and RGB, plus noise files.
func makePetsFolder(_ labels: [String] = ["cat", "dog", "great_dane"], perLabel: Int = 4, corrupt: Bool = false) throws
    -> Path
{
    let root = Path(try makeTemporaryDirectory("pets")), dir = root / "images"
    try FileManager.default.createDirectory(atPath: dir.string, withIntermediateDirectories: true)
    var n = 0
    for (li, label) in labels.enumerated() {
        for k in 0..<perLabel {
            let w = 40 + 7 * k + li, h = 30 + 5 * ((k + li) % 3)
            let gray = k % 3 == 2
            var img = Image(width: w, height: h, channels: gray ? 1 : 3)
            for i in img.pixels.indices { img.pixels[i] = UInt8((i * 7 + li * 50 + k * 13) % 256) }
            let png = k % 2 == 1
            let file = dir / "\(label)_\(n).\(png ? "png" : "jpg")"
            if png { try img.writePNG(to: file.string) } else { try img.writeJPEG(to: file.string, quality: 90) }
            n += 1
        }
    }
    try Data("not an image".utf8).write(to: URL(fileURLWithPath: (dir / "README.txt").string))
    try Data().write(to: URL(fileURLWithPath: (dir / ".hidden_1.jpg").string))
    if corrupt { try Data("garbage".utf8).write(to: URL(fileURLWithPath: (dir / "cat_99.JPG").string)) }
    return root
}

let petsRe = #"(.+)_\d+\.(jpg|png|JPG)$"#

/// A one-conv CNN learner on a pets folder's images (Resize 24, augTransforms to 16, imagenet Normalize, bs 4).
func tinyImageLearner(_ root: Path) throws -> Learner {
    let dls = try ImageDataLoaders.fromNameRe(
        root / "images", fnames: try getImageFiles(root / "images"), pattern: petsRe, seed: 2,
        itemTfms: [Resize(24)], batchTfms: augTransforms(size: 16, minScale: 0.75) + [Normalize.imagenet],
        bs: 4, numWorkers: 2)
    let g = Generator(seed: 0)
    let model = Sequential(
        Conv2d(3, 8, kernelSize: 3, padding: 1, generator: g), ReLU(), AdaptiveAvgPool2d(1), Flatten(),
        Linear(8, dls.c, generator: g))
    return Learner(model: model, dls: dls, lr: 1e-2, metrics: [.accuracy], progress: false)
}

@Suite struct DataBlockTests {
    @Test func getImageFilesIsSortedCaseInsensitiveAndSkipsHiddenFiles() throws {
        let root = try makePetsFolder(corrupt: true)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let files = try getImageFiles(root)
        #expect(files.count == 13 && files == files.sorted())
        #expect(
            files.contains(root / "images" / "cat_99.JPG")
                && !files.contains { $0.name.hasPrefix(".") || $0.suffix == ".txt" })
        #expect(try getImageFiles(root, recurse: false).isEmpty)
        #expect(try getImageFiles(root, folders: ["other"]).isEmpty)
        #expect(throws: DataBlockError.self) { try getImageFiles(root / "nope") }
    }

    @Test func labellersAndTheirErrors() throws {
        let re = try RegexLabeller(#"(.+)_\d+.jpg$"#)
        #expect(try usingAttr(re, \.name)(Path("/x/images/great_dane_12.jpg")) == "great_dane")
        #expect(parentLabel(Path("/data/train/dog/1.png")) == "dog")
        do {
            _ = try re("/x/images/cat.png")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains(#"Failed to find "(.+)_\d+.jpg$" in "/x/images/cat.png""#))
        }
        #expect(throws: DataBlockError.self) { try RegexLabeller("no_group") }
    }

    @Test func splitters() throws {
        let items = (0..<50).map { Path("/d/\($0 % 2 == 0 ? "train" : "valid")/c/\($0).png") }
        let a = try RandomSplitter(validPct: 0.2, seed: 42).split(items),
            b = try RandomSplitter(validPct: 0.2, seed: 42).split(items)
        #expect(
            a.valid.count == 10 && a.train.count == 40 && a.valid == b.valid && Set(a.train + a.valid) == Set(0..<50))
        #expect(try RandomSplitter(validPct: 0.2, seed: 1).split(items).valid != a.valid)
        let g = try GrandparentSplitter().split(items)
        #expect(g.train == Array(stride(from: 0, to: 50, by: 2)) && g.valid == Array(stride(from: 1, to: 50, by: 2)))
        #expect(try FuncSplitter { $0.name.hasPrefix("1") }.split(items).valid.count == 11)
        #expect(try IndexSplitter([3, 4]).split(items).valid == [3, 4])
        #expect(throws: DataBlockError.self) { try IndexSplitter([50]).split(items) }
        let list = try makeTemporaryDirectory() + "/valid.txt"
        try "3.png\n7.png\n".write(toFile: list, atomically: true, encoding: .utf8)
        #expect(try FileSplitter(Path(list)).split(items).valid == [3, 7])
    }

    @Test func dataloadersGiveChannelsLastFloatBatchesWithASortedVocab() throws {
        let root = try makePetsFolder()
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), getItems: getImageFiles,
            splitter: RandomSplitter(validPct: 0.25, seed: 42), getY: usingAttr(try RegexLabeller(petsRe), \.name),
            itemTfms: [Resize(32)], batchTfms: augTransforms(size: 24, minScale: 0.75))
        let dls = try block.dataloaders(from: root / "images", bs: 4, numWorkers: 2, seed: 1)
        #expect(dls.vocab == ["cat", "dog", "great_dane"] && dls.c == 3)
        #expect(dls.train.itemCount == 9 && dls.valid.itemCount == 3 && dls.train.count == 2)
        let b = try dls.train.first()
        #expect(b.x.shape == [4, 3, 24, 24] && b.x.dtype == .float32 && b.x.isChannelsLast && b.y.dtype == .int64)
        let v = try dls.valid.first()
        #expect(v.x.shape == [3, 3, 24, 24])
        #expect(try dls.valid.first().x.floats == v.x.floats)  // validation is deterministic
    }

    @Test func sameSeedSameBatchesWhateverTheNumberOfWorkers() throws {
        let root = try makePetsFolder(perLabel: 6)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), splitter: RandomSplitter(seed: 3),
            getY: usingAttr(try RegexLabeller(petsRe), \.name), itemTfms: [Resize(28)],
            batchTfms: augTransforms(size: 20, minScale: 0.5))
        func epoch(_ workers: Int) throws -> [[Float]] {
            let dl = try block.dataloaders(from: root / "images", bs: 3, numWorkers: workers, seed: 7).train
            dl.epoch = 1
            return dl.map { $0.x.floats + $0.y.floats }
        }
        let ref = try epoch(1)
        #expect(ref.count == 5)  // 15 training items, bs 3
        for w in [0, 2, 8] { #expect(try epoch(w) == ref, "\(w) workers") }
    }

    @Test func badInputIsATypedErrorBeforeTraining() throws {
        let root = try makePetsFolder(corrupt: true)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let re = try RegexLabeller(petsRe)
        // A label only in validation.
        let onlyValid = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), splitter: FuncSplitter { $0.name.hasPrefix("dog") },
            getY: usingAttr(re, \.name), itemTfms: [Resize(16)])
        #expect(
            throws: DataBlockError.labelOnlyInValidation(label: "dog", item: (root / "images" / "dog_4.jpg").string)
        ) {
            try onlyValid.datasets(root / "images")
        }
        // An empty folder; a pattern that matches no file.
        let empty = Path(try makeTemporaryDirectory())
        #expect(throws: DataBlockError.noItems(empty, what: "image files")) {
            try DataBlock(blocks: (ImageBlock(), CategoryBlock()), getY: parentLabel).datasets(empty)
        }
        let wrong = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), getY: usingAttr(try RegexLabeller(#"(.+)-\d+$"#), \.name))
        #expect(throws: DataBlockError.self) { try wrong.datasets(root / "images") }
        // A corrupt file is skipped (the batch is one shorter) unless strict.
        let block = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), splitter: IndexSplitter([]), getY: usingAttr(re, \.name),
            itemTfms: [Resize(16)])
        let ds = try block.datasets(root / "images")
        let bad = try #require(ds.train.items.firstIndex { $0.name == "cat_99.JPG" })
        let b = try ds.train.batch([0, bad, 1], seeds: [1, 2, 3], training: false)
        #expect(b.x.shape[0] == 2 && ds.skipped.map(\.path) == [ds.train.items[bad].string])
        let strict = try block.datasets(root / "images", strict: true)
        #expect(throws: ImageError.self) { try strict.train.batch([bad], seeds: [0], training: false) }
    }

    @Test func summaryWalksEveryStepAndExplainsACollateFailure() throws {
        let root = try makePetsFolder(corrupt: true)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let re = try RegexLabeller(petsRe)
        var lines: [String] = []
        let good = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), splitter: RandomSplitter(seed: 42), getY: usingAttr(re, \.name),
            itemTfms: [Resize(32)], batchTfms: augTransforms(size: 24))
        let s = try good.summary(root / "images", checkAll: true) { lines.append($0) }
        #expect(s.items == 13 && s.train + s.valid == 13 && s.classes >= 3 && s.error == nil)
        #expect(s.skipped == [(root / "images" / "cat_99.JPG").string])
        let text = lines.joined(separator: "\n")
        for step in [
            "Found 13 items", "2 datasets of sizes", "Building one sample", "Final sample", "applying Resize",
            "Collating items in a batch", "Applying batch_tfms", "applying IntToFloat"
        ] {
            #expect(text.contains(step), "\(step)")
        }
        lines = []
        let noResize = DataBlock(
            blocks: (ImageBlock(), CategoryBlock()), splitter: RandomSplitter(seed: 42), getY: usingAttr(re, \.name))
        let f = try noResize.summary(root / "images") { lines.append($0) }
        #expect(
            f.error?.contains("Could not collate the 0-th members of your tuples because got the following shapes: [")
                == true)
        #expect(lines.contains("Error! It's not possible to collate your items in a batch"))
    }

    @Test func multiCategoryTargetsAreMultiHot() throws {
        let root = try makePetsFolder()
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let block = DataBlock(
            blocks: (ImageBlock(.gray), MultiCategoryBlock()), splitter: IndexSplitter([]),
            getY: { p in p.name.hasPrefix("great") ? ["dog", "great"] : [String(p.name.prefix(3))] },
            itemTfms: [Resize(16, method: .squish)])
        let dls = try block.dataloaders(from: root / "images", bs: 12, numWorkers: 1, seed: 0)
        #expect(dls.vocab == ["cat", "dog", "great"])
        let b = try dls.train.first()
        #expect(b.x.shape == [12, 1, 16, 16] && b.y.shape == [12, 3] && b.y.floats.reduce(0, +) == 16)
    }

    @Test func factoriesLabelAndSplitAsFastai() throws {
        let root = Path(try makeTemporaryDirectory("folder"))
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        for (split, n) in [("train", 6), ("valid", 3), ("extra", 2)] {
            for k in 0..<n {
                let label = k % 2 == 0 ? "ant" : "bee"
                try FileManager.default.createDirectory(
                    atPath: (root / split / label).string, withIntermediateDirectories: true)
                try Image(width: 20 + k, height: 18, channels: 3, fill: UInt8(k * 20)).writePNG(
                    to: (root / split / label / "\(k).png").string)
            }
        }
        let folder = try ImageDataLoaders.fromFolder(root, seed: 0, itemTfms: [Resize(16)], bs: 2)
        // "extra" ignored
        #expect(folder.vocab == ["ant", "bee"] && folder.train.itemCount == 6 && folder.valid.itemCount == 3)
        let random = try ImageDataLoaders.fromFolder(root, validPct: 0.25, seed: 0, itemTfms: [Resize(16)], bs: 2)
        #expect(random.train.itemCount == 9 && random.valid.itemCount == 2)
        let files = try getImageFiles(root / "train")
        let byName = try ImageDataLoaders.fromNameFunc(
            root, fnames: files, labelFunc: { Int($0.prefix(1))! < 3 ? "low" : "high" },
            validPct: 0.5, seed: 1, itemTfms: [Resize(16)], bs: 2)
        #expect(byName.vocab.allSatisfy { ["low", "high"].contains($0) } && byName.train.itemCount == 3)
        let byPath = try ImageDataLoaders.fromPathFunc(
            root, fnames: files, labelFunc: parentLabel, validPct: 0, seed: 1,
            itemTfms: [Resize(16)], bs: 3)
        #expect(byPath.vocab == ["ant", "bee"] && byPath.valid.itemCount == 0)
        let b = try byPath.train.first()
        #expect(b.x.shape == [3, 3, 16, 16] && b.y.scalars(as: Int64.self).allSatisfy { $0 == 0 || $0 == 1 })
    }

    /// The loaders feed a Learner: channels-last float batches through a small CNN, a finite loss, accuracy recorded.
    @Test func aLearnerTrainsOnAnImageFolder() throws {
        let root = try makePetsFolder(perLabel: 6)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let learn = try tinyImageLearner(root)
        let dls = learn.dls
        try learn.fit(2)
        #expect(
            learn.recorder.rawLosses.count == 2 * dls.train.count && learn.recorder.rawLosses.allSatisfy(\.isFinite))
        #expect(learn.recorder.values.count == 2)
    }

    @Test func showBatchWritesAGridPNG() throws {
        let root = try makePetsFolder()
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let dls = try ImageDataLoaders.fromNameRe(
            root / "images", fnames: try getImageFiles(root / "images"), pattern: petsRe, seed: 1,
            itemTfms: [Resize(32)], batchTfms: augTransforms(size: 24) + [Normalize.imagenet], bs: 4)
        let out = root.string + "/batch.png"
        try dls.showBatch(nrows: 2, ncols: 2, to: out)
        let img = try Image.read(out)
        #expect(img.width == 2 * (180 + 8) + 8 && img.height == 2 * (180 + 22 + 8) + 8)
        #expect(dls.labelText(Tensor([Int64(2)]), 0) == "great_dane")
    }
}
