import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

/// Resident set size of this process in bytes (from /proc).
func residentBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = Int(s.split(separator: " ")[1]) ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

@Suite(.serialized) struct ReproducibilityTests {
    /// One training run from a seed: model, shuffling, dropout and augmentation all derive from it (not from the
    /// default generator, which tests running in parallel draw from).
    func run(seed: UInt64, dls data: DataLoaders) throws -> [Double] {
        let g = Generator(seed: seed)
        let model = Sequential(Linear(16, 64, generator: g), ReLU(), Dropout(0.2, generator: g), Linear(64, 4, generator: g))
        let train = DataLoader(data.train.dataset, batchSize: data.train.batchSize, shuffle: true, seed: seed, batchTransforms: [Noise()])
        let dls = DataLoaders(train: train, valid: data.valid)
        let learn = Learner(model: model, dls: dls, lr: 1e-2, progress: false)
        try learn.fitOneCycle(2)
        return learn.recorder.rawLosses + learn.recorder.validLosses
    }

    @Test func sameSeedSameLossesAndASecondLearnerIsUnaffected() throws {
        let dls = syntheticData(train: 1024, valid: 256)
        let a = try run(seed: 3, dls: dls)
        let b = try run(seed: 3, dls: dls)  // a second Learner on the same loaders
        #expect(a == b)
        let c = try run(seed: 4, dls: dls)
        #expect(a != c)
    }

    /// Memory is process-wide, so this measures in a child process (an exit test) away from parallel tests, which
    /// reports its figures for the checks here. A first learner pays the one-time costs (compiled kernels, thread
    /// pools, timed path choices); after it, each further learner must hand back everything it used.
    @Test func memoryReturnsAfterALearnerIsReleased() async throws {
        let r = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let x = Tensor.randn([2048, 1, 28, 28]), y = Tensor.randint(0, 10, [2048])
            let dls = DataLoaders(train: DataLoader(x, y, batchSize: 256, shuffle: true),
                                  valid: DataLoader(x[0..<512], y[0..<512], batchSize: 256))
            func train(_ seed: UInt64) -> Int {
                let learn = Learner(model: FashionMNISTModel.resnet.make(generator: Generator(seed: seed)), dls: dls,
                                    progress: false)
                try? learn.fit(1)
                return residentBytes()
            }
            _ = train(0)
            let base = residentBytes(), liveBase = BlockCache.shared.liveBytes
            let peak = Swift.max(train(1), train(2))
            let figures = [base, peak, residentBytes(), BlockCache.shared.liveBytes - liveBase]
            FileHandle.standardError.write(Data("figures \(figures.map(String.init).joined(separator: " "))\n".utf8))
        }
        let said = String(decoding: try #require(r).standardErrorContent, as: UTF8.self)
        let line = try #require(said.split(separator: "\n").last { $0.hasPrefix("figures ") }, "child said: \(said)")
        let f = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        try #require(f.count == 4, "child said: \(said)")
        let (base, peak, end, stillLive) = (f[0], f[1], f[2], f[3])
        #expect(peak > base + 50_000_000, "training used no memory? RSS \(peak) vs \(base)")
        #expect(stillLive == 0, "tensors still alive: \(stillLive) bytes")
        // Not to the byte: glibc keeps exited loader threads' stacks and arena pages. A learner not handed back
        // would keep most of what it used (activations, gradients, optimizer state).
        #expect(end - base < (peak - base) / 8, "RSS \(end) did not return to \(base) (peak \(peak))")
    }

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
        #expect(shuffled.map { $0.x.doubles } .flatMap { $0 }.map { Int64($0) } == shuffled.flatMap { $0.y.scalars(as: Int64.self) })
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
            let dl = DataLoader(TensorDataset(x, y), batchSize: 8, shuffle: true, seed: 9, numWorkers: workers, batchTransforms: [Noise()])
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
}

/// Training-only Gaussian noise drawn from the batch's generator.
struct Noise: BatchTransform {
    var order: Int { 50 }
    func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        training ? (batch.x + Tensor.randn(batch.x.shape, std: 0.05, generator: generator), batch.y) : batch
    }
}
