import Foundation
import SwiftAICore
import SwiftAIData

/// What ``DataBlock/summary(_:bs:checkAll:strict:print:)`` found.
public struct DataSummary: Codable, Equatable {
    public var items: Int
    public var train: Int
    public var valid: Int
    public var classes: Int
    /// Files that could not be decoded.
    public var skipped: [String]
    /// Why the first batch could not be built (e.g. images of different sizes), if it could not.
    public var error: String?
}

extension DataBlock {
    /// Walks `source` through every step as fastai's `DataBlock.summary` does — items found, split sizes, one
    /// sample through each pipeline, the item transforms, collation and the batch transforms — printing each.
    /// A batch that cannot be built is reported (fastai's collate message, every shape), not thrown.
    ///
    /// - Parameter checkAll: decode every item (on all cores) to list the files that would be skipped.
    @discardableResult
    public func summary(
        _ source: Path, bs: Int = 4, checkAll: Bool = false, strict: Bool = false,
        print out: (String) -> Void = { Swift.print($0) }
    ) throws -> DataSummary {
        out("Setting-up type transforms pipelines")
        out("Collecting items from \(source)")
        let ds = try datasets(source, strict: strict)
        out("Found \(ds.items.count) items")
        out("2 datasets of sizes \(ds.train.count),\(ds.valid.count)")
        let target = multiLabel ? "MultiCategorize" : "Categorize"
        out("Setting up Pipeline: Image.read(\(imageBlock.mode))")
        out(
            """
            Setting up Pipeline: getY -> \(target) -- {vocab: \(ds.vocab.count) \
            classes\(fixedVocab == nil ? ", sorted" : "")}
            """
        )
        var summary = DataSummary(
            items: ds.items.count, train: ds.train.count, valid: ds.valid.count, classes: ds.vocab.count,
            skipped: [], error: nil)
        if checkAll {
            for set in [ds.train, ds.valid] { set.checkAll() }
        }
        summary.skipped = ds.skipped.map(\.path)

        // One sample.
        let train = ds.train
        let first = (0..<train.count).first { (try? train.decode($0)) != nil }
        guard let i0 = first else {
            summary.error = "\(DataBlockError.noLoadableItems(skipped: train.items.map(\.string)))"
            summary.skipped = ds.skipped.map(\.path)
            out("Error! \(summary.error!)")
            return summary
        }
        let img0 = try train.decode(i0)
        out("\nBuilding one sample")
        out(
            """
              Pipeline: Image.read\n    starting from\n      \(train.items[i0])\n    applying Image.read gives\n      \
            \(describe(img0))
            """
        )
        let labels = train.targets[i0].map { ds.vocab[$0] }
        let y0 = multiLabel ? "TensorMultiCategory(\(train.targets[i0]))" : "TensorCategory(\(train.targets[i0][0]))"
        out(
            """
              Pipeline: getY -> \(target)\n    starting from\n      \(train.items[i0])\n    applying getY gives\n      \
            \(multiLabel ? "\(labels)" : labels[0])\n    applying \(target) gives\n      \(y0)
            """
        )
        out("\nFinal sample: (\(describe(img0)), \(y0))\n")
        let itemNames = itemTfms.map(\.description) + ["ToTensor"]
        out("Setting up after_item: Pipeline: \(itemNames.joined(separator: " -> "))")
        out("Setting up before_batch: Pipeline: ")
        let pipeline = BatchPipeline(allBatchTfms)
        out("Setting up after_batch: Pipeline: \(pipeline)")

        // One batch.
        out("\nBuilding one batch\nApplying item_tfms to the first sample:")
        out("  Pipeline: \(itemNames.joined(separator: " -> "))\n    starting from\n      (\(describe(img0)), \(y0))")
        var img = img0
        let g = Generator(seed: 0)
        for t in itemTfms {
            img = t.apply(img, generator: g, training: true)
            out("    applying \(t) gives\n      (\(describe(img)), \(y0))")
        }
        out(
            "    applying ToTensor gives\n      (TensorImage of size \(img.channels)x\(img.height)x\(img.width), \(y0))"
        )
        let idx = Array((0..<train.count).prefix(bs))
        out(
            """
            \nAdding the next \(idx.count - 1) samples\n\nNo before_batch transform to apply\n\nCollating items in a \
            batch
            """
        )
        var batch: Batch
        do {
            batch = try train.batch(idx, seeds: idx.map { UInt64($0) }, training: true)
        } catch let e as DataBlockError {
            if case .collate = e { out("Error! It's not possible to collate your items in a batch") }
            out("\(e)")
            summary.error = "\(e)"
            summary.skipped = ds.skipped.map(\.path)
            return summary
        }
        out(
            """
            \nApplying batch_tfms to the batch built\n  Pipeline: \(pipeline)\n    starting from\n      \
            \(describe(batch))
            """
        )
        for t in pipeline.transforms {
            batch = noGrad { t.apply(batch, generator: g, training: true) }
            out("    applying \(t) gives\n      \(describe(batch))")
        }
        summary.skipped = ds.skipped.map(\.path)
        return summary
    }

    private func describe(_ img: Image) -> String {
        "Image mode=\(img.channels == 3 ? "RGB" : "L") size=\(img.width)x\(img.height)"
    }

    private func describe(_ b: Batch) -> String {
        let x = b.x.shape.map(String.init).joined(separator: "x")
        let y =
            b.y.dtype == .int64
            ? "TensorCategory(\(b.y.scalars(as: Int64.self)))"
            : "TensorMultiCategory of size \(b.y.shape.map(String.init).joined(separator: "x"))"
        return "(TensorImage of size \(x) \(b.x.dtype), \(y))"
    }
}

extension ImageDataset {
    /// Decodes every item on all cores, recording the ones that fail in the skip log.
    func checkAll() {
        let n = items.count, workers = Swift.max(1, ProcessInfo.processInfo.activeProcessorCount)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in stride(from: w, to: n, by: workers) {
                do { _ = try decode(i) } catch let e as ImageError { log.skip(e) } catch {}
            }
        }
    }
}
