import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAITestSupport

/// The loader: batching, shuffling, workers, errors, resuming mid-epoch, and the Fashion-MNIST files.
@Suite struct DataLoaderTests {
    @Test func dataLoaderBatchesAndShuffles() throws {
        let x = Tensor((0..<10).map(Double.init), shape: [10, 1]), y = Tensor((0..<10).map(Int64.init))
        let plain = DataLoader(x, y, batchSize: 4)
        #expect(plain.count == 3 && plain.map { $0.x.shape[0] } == [4, 4, 2])
        #expect(plain.flatMap { $0.y.scalars(as: Int64.self) } == Array(0..<10))
        let drop = DataLoader(x, y, batchSize: 4, dropLast: true)
        #expect(drop.count == 2 && drop.map { $0.x.shape[0] } == [4, 4])
        let shuffled = DataLoader(x, y, batchSize: 3, shuffle: true, seed: 5)
        let e0 = shuffled.flatMap { $0.y.scalars(as: Int64.self) }
        #expect(Set(e0) == Set(0..<10) && e0 != Array(0..<10))
        #expect(shuffled.flatMap { $0.y.scalars(as: Int64.self) } == e0)  // same epoch, same order
        shuffled.epoch = 1
        #expect(shuffled.flatMap { $0.y.scalars(as: Int64.self) } != e0)
        #expect(
            shuffled.map { $0.x.doubles }.flatMap { $0 }.map { Int64($0) }
                == shuffled.flatMap { $0.y.scalars(as: Int64.self) })
        // Prefetching gives the same batches as loading inline; the transform runs on every batch.
        let t = DataLoader(x, y, batchSize: 3, shuffle: true, seed: 5, prefetch: 2) { ($0.x * 2, $0.y) }
        let inline = DataLoader(x, y, batchSize: 3, shuffle: true, seed: 5, prefetch: 0) { ($0.x * 2, $0.y) }
        #expect(t.map(\.x.doubles) == inline.map(\.x.doubles))
        #expect(try t.first().x.doubles == t.map(\.x.doubles)[0])
        // Stopping early does not hang (the loading thread is released).
        for (i, _) in t.enumerated() where i == 0 { break }
        t.maxBatches = 2
        #expect(t.count == 2 && Array(t).count == 2)
    }

    /// Batches depend on the seed, epoch and batch index only: 0, 1, 2 or 8 workers give identical epochs.
    @Test func sameBatchesWhateverTheNumberOfWorkers() throws {
        let x = Tensor.randn([100, 3]), y = Tensor((0..<100).map(Int64.init))
        func epoch(_ workers: Int, _ e: Int) -> [[Double]] {
            let dl = DataLoader(
                TensorDataset(x, y), batchSize: 8, shuffle: true, seed: 9, numWorkers: workers,
                batchTransforms: [Noise()])
            dl.epoch = e
            return dl.map { $0.x.doubles + $0.y.doubles }
        }
        let ref = epoch(0, 1)
        #expect(ref.count == 13)
        for w in [1, 2, 8] { #expect(epoch(w, 1) == ref, "\(w) workers") }
        #expect(epoch(2, 2) != ref)
    }

    /// An error while building a batch reaches the consumer (thrown by `nextBatch`, kept by `for … in`).
    @Test func loadingErrorsReachTheConsumer() throws {
        struct Broken: Error {}
        final class Failing: Dataset {
            var count: Int { 10 }
            func batch(_ indices: [Int], seeds: [UInt64], training: Bool) throws -> Batch {
                if indices.contains(7) { throw Broken() }
                return (Tensor.zeros([indices.count, 1]), Tensor.zeros([indices.count]))
            }
        }
        for workers in [0, 2] {
            let dl = DataLoader(Failing(), batchSize: 3, numWorkers: workers)
            let it = dl.makeIterator()
            #expect(try it.nextBatch() != nil && it.nextBatch() != nil)
            #expect(throws: Broken.self) { try it.nextBatch() }
            let it2 = dl.makeIterator()
            var n = 0
            while it2.next() != nil { n += 1 }
            #expect(n == 2 && it2.error is Broken)
        }
    }

    @Test func fashionMNISTLoadsAndReportsMissingData() throws {
        #expect(throws: DatasetError.self) { try FashionMNIST(directory: "/nonexistent") }
        do { _ = try FashionMNIST(directory: "/nonexistent") } catch {
            #expect("\(error)".contains("apt-get install dataset-fashion-mnist"))
        }
        guard let ds = try? FashionMNIST() else { return }
        #expect(ds.trainImages.shape == [60_000, 28, 28] && ds.testLabels.shape == [10_000])
        #expect(Set(ds.trainLabels[0..<1000].scalars(as: Int64.self)) == Set(0..<10))
        let x = FashionMNIST.normalise(ds.trainImages[0..<1000])
        #expect(abs(x.mean().item()) < 0.15)
        let dir = tempDir("idx")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]).write(to: URL(fileURLWithPath: dir + "/short.idx"))
        #expect(throws: DatasetError.self) { try IDX.read(path: dir + "/short.idx") }
    }

    /// A resumed epoch's batches from `start` on are those a full iteration gives, with any number of workers.
    @Test func iterationResumesAtABatch() throws {
        let x = Tensor.randn([50, 2]), y = Tensor((0..<50).map(Int64.init))
        for workers in [0, 1, 3] {
            let dl = DataLoader(
                TensorDataset(x, y), batchSize: 8, shuffle: true, seed: 4, numWorkers: workers,
                batchTransforms: [Noise()])
            dl.epoch = 2
            let all = dl.map { $0.x.doubles + $0.y.doubles }
            var rest: [[Double]] = []
            let it = dl.makeIterator(from: 4)
            while let b = try it.nextBatch() { rest.append(b.x.doubles + b.y.doubles) }
            #expect(rest == Array(all[4...]), "\(workers) workers")
            #expect(try dl.makeIterator(from: all.count).nextBatch() == nil)
        }
    }
}
