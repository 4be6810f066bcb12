import ArgumentParser
import Foundation
import SwiftAICore

extension BenchCommand {
    /// `swiftai bench allreduce`, under `mpirun`: in-place float32 sum of ProcessGroup.allReduce per message size.
    /// scripts/allreduce_bench.c is the same loop over a bare MPI_Allreduce.
    struct AllReduce: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allreduce",
            abstract: """
                All-reduce bandwidth (float32 sum, in place) per message size; run under mpirun, rank 0 prints. \
                Bus bandwidth is 2(N-1)/N · bytes / median time (as nccl-tests).
                """)
        @Option(help: "Smallest message, bytes.") var minBytes = 4 << 10
        @Option(help: "Largest message, bytes (sizes grow ×4).") var maxBytes = 64 << 20
        @Option(help: "Timed repetitions per size (default: 2^30 / bytes, within 10…200).") var reps: Int?

        func run() throws {
            let group = try ProcessGroup.mpi()
            defer { group.finalize() }
            var bytes = minBytes
            while bytes <= maxBytes {
                let n = reps ?? Swift.min(200, Swift.max(10, (1 << 30) / bytes))
                var t = Tensor.zeros([bytes / 4])
                let s = BenchCommand.median(reps: n, warmup: Swift.max(2, n / 10)) { group.allReduce(&t, .sum) }
                let bus = 2 * Double(group.size - 1) / Double(group.size) * Double(bytes) / s / 1e9
                if group.isMain {
                    print(
                        jsonLine([
                            "bench": "allreduce", "impl": "swiftai", "bytes": bytes, "world_size": group.size,
                            "reps": n, "seconds_median": Scientific(s), "bus_gbytes_per_s": Rounded(bus, 3)
                        ]))
                    fflush(stdout)
                }
                bytes *= 4
            }
        }
    }
}
