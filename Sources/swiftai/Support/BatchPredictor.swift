import Foundation
import SwiftAICore
import SwiftAILearner
import SwiftAIVision

/// Decodes uploads and runs the model on one thread, batching the requests that arrive while it is busy (up to
/// `maxBatch`). All computation happens there, on the OpenMP team — decoding on the server's event loops would
/// compete with the model's threads for the cores and stall them at every barrier.
final class BatchPredictor: @unchecked Sendable {
    let vocab: [String]
    let mode: ImageMode
    private let learn: Learner
    private let pipeline: InferencePipeline
    private let fixedSize: Bool
    private let maxBatch: Int
    private let cond = NSCondition()
    private var queue: [(bytes: [UInt8], maxPixels: Int, done: CheckedContinuation<[Double], Error>)] = []
    private(set) var stats = (batches: 0, images: 0)

    init(learn: Learner, maxBatch: Int) throws {
        self.learn = learn
        let p = try InferencePipeline(learn.dls)
        pipeline = p
        vocab = p.vocab
        mode = p.mode
        self.maxBatch = maxBatch
        fixedSize = p.inputSize != nil  // images batch together only when the pipeline gives them all one size
        learn.model.eval()
        let worker = Thread { [unowned self] in self.loop() }
        worker.stackSize = 8 << 20
        worker.start()
    }

    /// Class probabilities of the image file in `bytes`; throws the decoder's ``ImageError``.
    func predict(_ bytes: [UInt8], maxPixels: Int) async throws -> [Double] {
        try await withCheckedThrowingContinuation { c in
            cond.lock()
            queue.append((bytes, maxPixels, c))
            cond.signal()
            cond.unlock()
        }
    }

    private func loop() {
        while true {
            cond.lock()
            while queue.isEmpty { cond.wait() }
            let take = fixedSize ? min(maxBatch, queue.count) : 1
            let jobs = Array(queue.prefix(take))
            queue.removeFirst(take)
            cond.unlock()
            // Decode and item-transform the uploads in parallel, then one model call for those that decoded.
            var prepared = [Result<Image, Error>](repeating: .failure(CancellationError()), count: jobs.count)
            prepared.withUnsafeMutableBufferPointer { out in
                Parallel.forEachChunk(jobs.count, grain: 1) { range in
                    for i in range {
                        out[i] = Result {
                            pipeline.prepare(
                                try Image.decode(
                                    jobs[i].bytes, path: "upload", mode: mode,
                                    maxPixels: jobs[i].maxPixels))
                        }
                    }
                }
            }
            let ok = prepared.indices.compactMap { i -> (Int, Image)? in (try? prepared[i].get()).map { (i, $0) } }
            var probs: Tensor?
            var failure: Error?
            if !ok.isEmpty {
                do {
                    let x = try pipeline.batch(prepared: ok.map(\.1))
                    probs = noGrad { learn.lossFunc.activation(learn.model(x)) }
                    stats = (stats.batches + 1, stats.images + ok.count)
                } catch { failure = error }
            }
            var row = 0
            for (i, job) in jobs.enumerated() {
                switch prepared[i] {
                case let .failure(e): job.done.resume(throwing: e)
                case .success:
                    if let probs {
                        job.done.resume(returning: probs[row].doubles)
                    } else {
                        job.done.resume(throwing: failure!)
                    }
                    row += 1
                }
            }
        }
    }
}
