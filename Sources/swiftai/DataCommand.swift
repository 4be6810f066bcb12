import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAIVision

/// How the CLI reads an image folder: labels, split, presizing and loading.
struct ImageFolderOptions: ParsableArguments {
    @Option(help: "Image folder (default: Fashion-MNIST as PNG files, written once to the cache).") var data: String?
    @Option(help: "Label = first group of this regular expression searched in the file name (default: the parent folder's name).")
    var labelRe: String?
    @Option(help: "Validation share when DIR has no train/ + valid/ (or test/) folders.") var validPct = 0.2
    @Option(help: "Seed for the split, shuffling and augmentation.") var seed: UInt64 = 42
    @Option(help: "Item transform: Resize to this square size (random crop on training, centre crop on validation).") var presize = 460
    @Option(help: "Batch transforms: augTransforms to this size.") var size = 224
    @Option(help: "augTransforms' minScale (RandomResizedCropGPU when below 1).") var minScale = 0.75
    @Flag(help: "No Resize and no augmentation (batches need equal image sizes).") var noResize = false
    @Option(help: "Batch size (default 64; train's Fashion-MNIST default depends on --arch).") var bs: Int?
    @Option(help: "Decoding threads (default: the number of cores).") var workers: Int?
    @Option(help: "Refuse images with more pixels than this.") var maxPixels = Image.defaultMaxPixels
    @Flag(help: "Stop at the first unreadable image instead of skipping it.") var strict = false

    /// The folder in use: `--data`, or the Fashion-MNIST PNG folder (written on first use).
    func folder() throws -> Path {
        if let data { return Path(data) }
        let dir = Path(FashionMNISTImages.defaultDirectory)
        try FashionMNISTImages.ensure(at: dir)
        return dir
    }

    /// The DataBlock the options describe. Split: `DIR/train` + `DIR/valid` (or `DIR/test`) when present, else
    /// a random `--valid-pct`.
    func dataBlock(_ dir: Path) throws -> DataBlock {
        guard dir.isDirectory else { throw DataBlockError.missingFolder(dir) }
        let validName = ["valid", "test"].first { (dir / $0).isDirectory }
        let byFolder = (dir / "train").isDirectory && validName != nil
        let splitter: Splitter = byFolder ? GrandparentSplitter(train: "train", valid: validName!) : RandomSplitter(validPct: validPct, seed: seed)
        let folders = byFolder ? ["train", validName!] : []
        let getY: (Path) throws -> String
        if let labelRe {
            let re = try RegexLabeller(labelRe)
            getY = usingAttr(re, \.name)
        } else {
            getY = parentLabel
        }
        var block = DataBlock(blocks: (ImageBlock(), CategoryBlock()), getItems: { try getImageFiles($0, folders: folders) },
                              splitter: splitter, getY: getY,
                              itemTfms: noResize ? [] : [Resize(presize)],
                              batchTfms: noResize ? [] : augTransforms(size: size, minScale: minScale) + [Normalize.imagenet])
        block.maxPixels = maxPixels
        return block
    }

    func dataloaders(bs: Int? = nil) throws -> (Path, DataLoaders) {
        let dir = try folder()
        return (dir, try dataBlock(dir).dataloaders(from: dir, bs: bs ?? self.bs ?? 64, numWorkers: workers, seed: seed, strict: strict))
    }
}

/// `swiftai data …`: look at an image folder the way training will see it.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Inspect image folders: summary, a batch grid, Fashion-MNIST as PNG files.",
        subcommands: [SummaryCmd.self, Show.self, FashionMNISTImagesCmd.self])

    struct SummaryCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "summary",
            abstract: "fastai's DataBlock.summary: items, split, one sample and one batch through every step; every file is decoded once to list the ones that would be skipped. Ends with one JSON line.")
        @OptionGroup var opts: ImageFolderOptions

        func run() throws {
            do {
                let dir = try opts.folder()
                let s = try opts.dataBlock(dir).summary(dir, bs: 4, checkAll: true, strict: opts.strict)
                let line = jsonLine(["items": s.items, "train": s.train, "valid": s.valid, "classes": s.classes,
                                     "skipped": s.skipped.map { Path($0).name }])
                print(s.error.map { line.dropLast() + ",\"error\":" + jsonLine(["e": $0]).dropFirst(5).dropLast() + "}" } ?? line)
                if s.error != nil { throw ExitCode.failure }
            } catch let e as ExitCode { throw e } catch { throw fail(error) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "fastai's show_batch: a grid of augmented training images titled with their labels.")
        @OptionGroup var opts: ImageFolderOptions
        @Option(help: "PNG to write.") var out = "batch.png"
        @Option(help: "Rows.") var nrows = 3
        @Option(help: "Columns.") var ncols = 3
        @Flag(help: "Show a validation batch instead.") var valid = false

        func run() throws {
            do {
                let (_, dls) = try opts.dataloaders()
                try dls.showBatch(nrows: nrows, ncols: ncols, to: out, valid: valid)
                print(jsonLine(["out": out, "classes": dls.c]))
            } catch { throw fail(error) }
        }
    }

    struct FashionMNISTImagesCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fashion-mnist-images",
            abstract: "Fashion-MNIST as PNG files in fastai's MNIST layout: train/<class>/<n>.png and test/<class>/<n>.png.")
        @Option(help: "Folder to write.") var out: String
        @Option(help: "Fashion-MNIST IDX folder (default: FMNIST_DIR or the Debian package's).") var fmnist: String?

        func run() throws {
            do {
                let n = try FashionMNISTImages.write(to: Path(out), from: FashionMNIST(directory: fmnist))
                print(jsonLine(["out": out, "images": n]))
            } catch { throw fail(error) }
        }
    }
}

/// Fashion-MNIST written as PNG files, the default image folder of the `data` commands.
enum FashionMNISTImages {
    /// Class folder names (FashionMNIST's class names with `/` replaced).
    static let folderNames = FashionMNIST.classes.map { $0.replacingOccurrences(of: "/", with: "_") }

    static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        let cache = env["SWIFTAI_CACHE"] ?? (env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/swiftai"
        return cache + "/fashion-mnist-png"
    }

    /// Writes the folder unless a complete one is there (a marker file is written last; a partial folder is redone).
    static func ensure(at dir: Path) throws {
        if FileManager.default.fileExists(atPath: (dir / ".complete").string) { return }
        FileHandle.standardError.write(Data("writing Fashion-MNIST as PNG files to \(dir) (once)\n".utf8))
        _ = try write(to: dir, from: FashionMNIST())
    }

    /// Writes every image; returns how many. Existing files are overwritten.
    @discardableResult
    static func write(to dir: Path, from ds: FashionMNIST) throws -> Int {
        let fm = FileManager.default
        var total = 0
        for (split, images, labels) in [("train", ds.trainImages, ds.trainLabels), ("test", ds.testImages, ds.testLabels)] {
            for name in folderNames { try fm.createDirectory(atPath: (dir / split / name).string, withIntermediateDirectories: true) }
            let px = images.contiguous().scalars(as: UInt8.self), ys = labels.scalars(as: Int64.self)
            let n = ys.count
            var failure: Error?
            let lock = NSLock()
            DispatchQueue.concurrentPerform(iterations: ProcessInfo.processInfo.activeProcessorCount) { w in
                for i in stride(from: w, to: n, by: ProcessInfo.processInfo.activeProcessorCount) {
                    let img = Image(width: 28, height: 28, channels: 1, pixels: Array(px[(i * 784)..<((i + 1) * 784)]))
                    do { try img.writePNG(to: (dir / split / folderNames[Int(ys[i])] / "\(i).png").string) } catch {
                        lock.lock(); failure = failure ?? error; lock.unlock()
                    }
                }
            }
            if let failure { throw failure }
            total += n
        }
        guard fm.createFile(atPath: (dir / ".complete").string, contents: Data()) else {
            throw ImageError.writeFailed(path: (dir / ".complete").string, reason: "cannot create the marker file")
        }
        return total
    }
}
