import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

extension BenchCommand {
    /// `swiftai bench ddp`: data-parallel training throughput, as `pytorch_ddp.py` measures it.
    struct DDP: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ddp",
            abstract: """
                Training throughput of the train recipe (the lesson's models on Fashion-MNIST, or a torchvision arch \
                on --data) under mpirun or in one process: timed batches after untimed ones, all ranks together.
                """,
            discussion: """
                Prints one JSON line (rank 0): images/s over all ranks, the step time, the time a rank waited for \
                gradients after its backward (comm_exposed_ms: communication not hidden, and waiting for slower \
                ranks), a blocking all-reduce of the same gradients alone (comm_ms), their shares of the step, and \
                the share of gradient bytes reduced while backward still ran (hidden_pct).
                """)
        @OptionGroup var recipe: RecipeOptions
        @OptionGroup var distributed: DistributedOptions
        @Option(help: "Untimed batches first (kernel choices, caches).") var warmup = 3
        @Option(help: "Timed batches.") var batches = 10
        @Option(help: "Blocking all-reduces of the gradients to time.") var commReps = 5

        func run() throws {
            let group = try ProcessGroup.fromEnvironment()
            let learn = try recipe.prepare(lr: 1e-3 * distributed.lrFactor(group.size))
            learn.remove(learn.callback(ProgressCallback.self)!)
            if distributed.syncBn && group.size > 1 { convertSyncBatchNorm(learn.model) }
            var result: [String: Any] = [:]
            try learn.distributed(group, bucketMegabytes: distributed.bucketMb) {
                learn.dls.train.maxBatches = warmup
                try learn.fit(1, valid: false)
                let before = learn.gradientSyncStats
                learn.dls.train.maxBatches = batches
                group.barrier()
                try learn.fitOneCycle(1, lrMax: 1e-3, callbacks: [NoValidation()])
                let rec = learn.recorder, seconds = rec.trainTimes.reduce(0, +)
                let after = learn.gradientSyncStats
                let steps = Double(batches)
                let exposed = ((after?.exposedSeconds ?? 0) - (before?.exposedSeconds ?? 0)) / steps
                let comm = blockingAllReduce(learn, group)
                result = [
                    "bench": "ddp", "model": recipe.arch.description, "world_size": group.size,
                    "threads_per_rank": Parallel.threadCount, "global_bs": learn.dls.train.batchSize,
                    "batches": batches, "images_per_s": rec.trainItemsPerSecond, "step_ms": seconds / steps * 1e3,
                    "comm_exposed_ms": exposed * 1e3, "comm_ms": comm * 1e3,
                    "comm_exposed_pct": Rounded(100 * exposed / (seconds / steps), 2),
                    "comm_pct": Rounded(100 * comm / (seconds / steps), 2),
                    "hidden_pct": Rounded(100 * (after?.hiddenShare ?? 0), 1),
                    "bucket_mb": distributed.bucketMb, "buckets": after?.buckets ?? 0,
                    "gradient_mb": Double(learn.model.parameters().reduce(0) { $0 + $1.value.count }) * 4 / 1_048_576
                ]
            }
            if group.isMain { print(jsonLine(result.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })) }
        }

        /// Median seconds of an all-reduce of every gradient (one flat float32 buffer), blocking: the communication a
        /// step would wait for without overlap.
        func blockingAllReduce(_ learn: Learner, _ group: ProcessGroup) -> Double {
            guard group.size > 1 else { return 0 }
            let n = learn.model.parameters().reduce(0) { $0 + $1.value.count }
            var buffer = Tensor.ones([n])
            return BenchCommand.median(reps: commReps, warmup: 1) {
                group.allReduce(&buffer)
            }
        }
    }
}

/// Skips the validation pass of a timed fit.
private final class NoValidation: Callback {
    override func beforeValidate(_ learn: Learner) throws { throw CancelValidate() }
}
