import ArgumentParser
import SwiftAIData
import SwiftAIVision

/// `swiftai data …`: look at an image folder the way training will see it.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Inspect image folders: summary, a batch grid, Fashion-MNIST as PNG files.",
        subcommands: [SummaryCmd.self, Show.self, FashionMNISTImagesCmd.self])

    struct SummaryCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "summary",
            abstract: """
                fastai's DataBlock.summary: items, split, one sample and one batch through every step; every file is \
                decoded once to list the ones that would be skipped. Ends with one JSON line.
                """)
        @OptionGroup var opts: ImageFolderOptions

        func run() throws {
            let dir = try opts.folder()
            let s = try opts.dataBlock(dir).summary(dir, bs: 4, checkAll: true, strict: opts.strict)
            var fields: [(String, Any)] = [
                ("items", s.items), ("train", s.train), ("valid", s.valid),
                ("classes", s.classes), ("skipped", s.skipped.map { Path($0).name })
            ]
            if let error = s.error { fields.append(("error", error)) }
            print(jsonLine(fields))
            if s.error != nil { throw ExitCode.failure }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "fastai's show_batch: a grid of augmented training images titled with their labels.")
        @OptionGroup var opts: ImageFolderOptions
        @Option(help: "PNG to write.") var out = "batch.png"
        @Option(help: "Rows.") var nrows = 3
        @Option(help: "Columns.") var ncols = 3
        @Flag(help: "Show a validation batch instead.") var valid = false

        func run() throws {
            let (_, dls) = try opts.dataloaders()
            try dls.showBatch(nrows: nrows, ncols: ncols, to: out, valid: valid)
            print(jsonLine(["out": out, "classes": dls.c]))
        }
    }

    struct FashionMNISTImagesCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fashion-mnist-images",
            abstract: """
                Fashion-MNIST as PNG files in fastai's MNIST layout: train/<class>/<n>.png and test/<class>/<n>.png.
                """)
        @Option(help: "Folder to write.") var out: String
        @OptionGroup var fmnist: FashionMNISTOption

        func run() throws {
            let n = try FashionMNISTImages.write(to: Path(out), from: fmnist.load())
            print(jsonLine(["out": out, "images": n]))
        }
    }
}
