import Foundation
import Testing

/// `mpirun` and the binaries it starts: `swiftai` and the scenarios of `swiftai-mpi-check` (Tests/MPICheck).
enum MPI {
    static let mpirun = URL(fileURLWithPath: "/usr/bin/mpirun")
    static let check = CLI.binary.deletingLastPathComponent().appendingPathComponent("swiftai-mpi-check")

    /// `mpirun -np n program arguments` (as root, oversubscribed, one thread per rank), or an MPMD command line when
    /// `arguments` holds `:`-separated parts.
    static func run(
        _ n: Int, _ program: URL, _ arguments: [String], in dir: URL, timeout: Double = 180,
        killRankWhen file: String? = nil
    ) async throws -> CLIRun {
        try await CLI.run(
            ["--oversubscribe", "--bind-to", "none", "-x", "SWIFTAI_NUM_THREADS", "-np", String(n), program.path]
                + arguments, in: dir, timeout: timeout, executable: mpirun,
            signal: file.map { (SIGKILL, $0, true) })
    }

    /// `swiftai-mpi-check` alone (one process, no launcher).
    static func alone(_ arguments: [String], in dir: URL) async throws -> CLIRun {
        try await CLI.run(arguments, in: dir, executable: check)
    }
}

/// Distributed training under `mpirun`, each run a job of its own processes (MPI initialises once per process).
@Suite(.serialized) final class MPITests {
    let dir: URL

    init() throws { dir = try CLI.temporaryDirectory("swiftai-mpi") }

    deinit { try? FileManager.default.removeItem(at: dir) }

    @Test(arguments: [2, 3])
    func collectives(_ n: Int) async throws {
        let r = try await MPI.run(n, MPI.check, ["collectives"], in: dir)
        #expect(r.status == 0 && r.json["size"] as? Int == n, "\(r)")
    }

    /// SyncBatchNorm on uneven shards (one rank empty in a second layout) equals BatchNorm2d on the whole batch:
    /// outputs, gradients, running statistics (checked inside the scenario).
    @Test(arguments: [2, 3, 4])
    func syncBatchNorm(_ n: Int) async throws {
        let r = try await MPI.run(n, MPI.check, ["syncBatchNorm"], in: dir)
        #expect(r.status == 0, "\(r)")
    }

    @Test func mpiOutsideMpirunSaysHowToStartIt() async throws {
        let r = try await MPI.alone(["collectives"], in: dir)
        #expect(r.status == 1 && r.stderr.contains("not started by mpirun"), "\(r)")
    }

    /// PyTorch's `_test_DDP_niter`: N ranks at global batch B end where one process at batch B does (1e-5 after 20
    /// steps), every rank holds the same parameters after every step (checked inside), ranks started from
    /// different seeds end equal (rank 0's weights were broadcast), and the reduced validation metrics and
    /// gathered predictions equal one process's evaluation of the same weights.
    @Test(arguments: ["sgd", "adamw"], ["plain", "bn"])
    func equalsOneProcess(_ opt: String, _ model: String) async throws {
        let args = ["train", "--opt", opt, "--model", model]
        let one = try await MPI.alone(args, in: dir)
        try #require(one.status == 0, "\(one)")
        let reference = try #require(one.json["params"] as? [Double])
        for n in [2, 3, 4] {
            let r = try await MPI.run(n, MPI.check, args + ["--seed-per-rank", "--bucket-mb", "0.004"], in: dir)
            try #require(r.status == 0, "\(r)")
            let params = try #require(r.json["params"] as? [Double])
            let diff = zip(params, reference).map { abs($0 - $1) }.max() ?? .infinity
            #expect(params.count == reference.count && diff < 1e-5, "\(n) ranks: parameters differ by \(diff)")
            let loss = try #require(r.json["valid_loss"] as? Double),
                alone = try #require(r.json["alone_valid_loss"] as? Double)
            #expect(abs(loss - alone) < 1e-5, "\(n) ranks: valid_loss \(loss), one process \(alone)")
            #expect(r.json["accuracy"] as? Double == r.json["alone_accuracy"] as? Double, "\(r)")
        }
    }

    /// Gradient accumulation: two micro-batches per step, the first backward inside `noSync`, end where one
    /// process's whole-batch steps do.
    @Test func noSyncAccumulatesMicroBatches() async throws {
        let one = try await MPI.alone(["train", "--opt", "sgd"], in: dir)
        try #require(one.status == 0, "\(one)")
        try one.stdout.write(to: dir.appendingPathComponent("one.json"), atomically: true, encoding: .utf8)
        let r = try await MPI.run(
            2, MPI.check, ["train", "--opt", "sgd", "--micro", "2", "--expect", "one.json"], in: dir)
        #expect(r.status == 0, "\(r)")
    }

    /// A NaN loss on one rank stops every rank at the same step (the loss callbacks see is the mean over ranks).
    @Test func nanOnOneRankStopsEveryRank() async throws {
        let r = try await MPI.run(3, MPI.check, ["train", "--nan", "1:5"], in: dir)
        #expect(r.status == 0 && !r.timedOut, "\(r)")
        #expect(
            (r.json["losses"] as? [Double])?.count == 5 && (r.json["stop"] as? String)?.contains("NaN") == true, "\(r)")
    }

    /// Ctrl-C reaching one rank stops them all after the same batch, with a checkpoint to resume from.
    @Test func interruptOnOneRankStopsEveryRank() async throws {
        let r = try await CLI.run(
            [
                "--oversubscribe", "--bind-to", "none", "-np", "2", CLI.binary.path, "train", "--arch", "cnn",
                "--epochs", "3", "--bs", "64", "--limit-batches", "40", "--out", "int"
            ], in: dir, timeout: 300, executable: MPI.mpirun, signal: (SIGINT, "int/checkpoint.safetensors", true))
        #expect(r.status == 0 && !r.timedOut && r.stdout.contains("stopped: interrupted"), "\(r)")
        #expect((r.json["epochs"] as? Int ?? 3) < 3, "\(r)")
    }

    /// An image folder, sharded, with decoding threads per rank.
    @Test func imageFolderUnderMpirun() async throws {
        try CLI.writeImageFolder(at: dir.appendingPathComponent("images"))
        let r = try await MPI.run(
            2, CLI.binary,
            ["train", "--data", "images", "--arch", "resnet18", "--no-pretrained", "--epochs", "1"] + tinyImages
                + ["--bs", "4", "--out", "folder"], in: dir, timeout: 300)
        #expect(r.status == 0 && r.json["world_size"] as? Int == 2, "\(r)")
    }

    /// Another MPI's launcher (announcing several processes that this Open MPI build sees as one) is refused.
    @Test func foreignLauncherIsRefused() async throws {
        let r = try await CLI.run(
            ["train", "--arch", "cnn", "--epochs", "1", "--limit-batches", "1", "--out", "pmi"], in: dir,
            environment: ["PMI_SIZE": "2"])
        #expect(r.status == 1 && r.stderr.contains("MPI sees a world of 1"), "\(r)")
    }

    @Test func ranksThatDifferAreNamedBeforeTraining() async throws {
        let r = try await MPI.run(
            1, MPI.check, ["train", "--valid", "101", ":", "-np", "1", MPI.check.path, "train", "--valid", "99"],
            in: dir)
        #expect(r.status != 0 && !r.timedOut, "\(r)")
        #expect(r.stderr.contains("validation items: rank 0 has 101, rank 1 has 99"), "\(r)")
    }

    /// `mpirun -np 2 swiftai train`: rank 0 alone writes the run; its metrics are a one-process evaluation's.
    @Test func trainMatchesOneProcessEvaluation() async throws {
        let r = try await MPI.run(
            2, CLI.binary,
            ["train", "--arch", "cnn", "--epochs", "1", "--limit-batches", "3", "--bs", "64", "--out", "run"],
            in: dir, timeout: 300)
        try #require(r.status == 0, "\(r)")
        #expect(
            r.jsonLines.count == 1 && r.json["world_size"] as? Int == 2 && r.json["global_bs"] as? Int == 64, "\(r)")
        #expect(r.stdout.components(separatedBy: "epoch ").count == 2, "one table, from rank 0: \(r)")
        let e = try await CLI.run(["evaluate", "run/model.safetensors", "--out", "eval"], in: dir, timeout: 300)
        try #require(e.status == 0, "\(e)")
        for key in ["accuracy", "valid_loss"] {
            let a = try #require(r.json[key] as? Double), b = try #require(e.json[key] as? Double)
            #expect(abs(a - b) <= 1e-4, "\(key): distributed \(a), one-process evaluate \(b)")
        }
    }

    /// `evaluate` (with TTA), `quantize`'s calibration and `lr-find` under `mpirun`: each rank takes its share and
    /// rank 0 reports what one process does — the same metrics, and an int8 model with the same weights.
    @Test func evaluateQuantizeAndLRFindUnderMpirun() async throws {
        let trained = try await MPI.run(
            2, CLI.binary,
            ["train", "--arch", "cnn", "--epochs", "1", "--limit-batches", "2", "--bs", "64", "--out", "run"], in: dir,
            timeout: 300)
        try #require(trained.status == 0, "\(trained)")
        let evaluate = ["evaluate", "run/model.safetensors", "--tta", "--bs", "500"]
        let one = try await CLI.run(evaluate + ["--out", "e1"], in: dir, timeout: 300)
        let two = try await MPI.run(2, CLI.binary, evaluate + ["--out", "e2"], in: dir, timeout: 300)
        try #require(one.status == 0 && two.status == 0, "\(one)\n\(two)")
        #expect(two.jsonLines.count == 1, "\(two)")
        #expect(one.json["items"] as? Int == two.json["items"] as? Int, "\(one.json) vs \(two.json)")
        for key in ["accuracy", "valid_loss"] {
            let x = try #require(one.json[key] as? Double), y = try #require(two.json[key] as? Double)
            #expect(abs(x - y) <= 1e-4, "\(key): one process \(x), 2 ranks \(y)")
        }
        // Fashion-MNIST bundles augment nothing, so TTA is deterministic here (with batch augmentations, the ranks'
        // batches draw their own).
        let tta = (one.json["tta_accuracy"] as? Double ?? -1, two.json["tta_accuracy"] as? Double ?? -2)
        #expect(abs(tta.0 - tta.1) <= 1e-4, "tta_accuracy: one process \(tta.0), 2 ranks \(tta.1)")
        let quantize = ["quantize", "run/model.safetensors", "--calib", "fashion-mnist", "--batches", "3", "--bs", "32"]
        let q1 = try await CLI.run(quantize + ["--to", "q1.safetensors"], in: dir, timeout: 300)
        let q2 = try await MPI.run(2, CLI.binary, quantize + ["--to", "q2.safetensors"], in: dir, timeout: 300)
        try #require(q1.status == 0 && q2.status == 0, "\(q1)\n\(q2)")
        let a = try Data(contentsOf: dir.appendingPathComponent("q1.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("q2.safetensors"))
        let same = a == b  // the whole file: int8 weights and the calibrated activation scales
        #expect(same, "the int8 model calibrated on 2 ranks differs from one process's")
        let lr = try await MPI.run(
            2, CLI.binary, ["lr-find", "--arch", "cnn", "--bs", "64", "--num-it", "12", "--out", "lr"], in: dir,
            timeout: 300)
        #expect(lr.status == 0 && lr.jsonLines.count == 1 && lr.json["valley"] != nil, "\(lr)")
    }

    /// A rank killed mid-run ends the job (no hang) naming it; `--resume` with the same world size ends as the
    /// uninterrupted distributed run, bit for bit, and with one process continues to the end.
    @Test func killedRankEndsTheJobAndResumeCompletes() async throws {
        let args = ["train", "--arch", "cnn", "--epochs", "2", "--limit-batches", "3", "--bs", "64"]
        let full = try await MPI.run(2, CLI.binary, args + ["--out", "full"], in: dir, timeout: 300)
        try #require(full.status == 0, "\(full)")
        let cut = try await MPI.run(
            2, CLI.binary, args + ["--out", "cut"], in: dir, timeout: 300, killRankWhen: "cut/checkpoint.safetensors")
        #expect(cut.status != 0 && !cut.timedOut, "\(cut)")
        #expect((cut.stdout + cut.stderr).contains("rank"), "\(cut)")
        try FileManager.default.copyItem(at: dir.appendingPathComponent("cut"), to: dir.appendingPathComponent("cut1"))
        let resumed = try await MPI.run(2, CLI.binary, ["train", "--resume", "cut"], in: dir, timeout: 300)
        try #require(resumed.status == 0, "\(resumed)")
        let a = try Data(contentsOf: dir.appendingPathComponent("full/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("cut/model.safetensors"))
        let same = CLI.weightBytes(a) == CLI.weightBytes(b)
        #expect(
            same, "resumed weights differ from the uninterrupted distributed run's")
        let alone = try await CLI.run(["train", "--resume", "cut1"], in: dir, timeout: 300)
        #expect(alone.status == 0 && alone.json["epochs"] as? Int == 2, "\(alone)")
    }

    /// A rank that cannot read its data ends the whole job with its reason.
    @Test func rankWithoutDataEndsTheJob() async throws {
        let args = ["train", "--arch", "cnn", "--epochs", "1", "--limit-batches", "2", "--bs", "64", "--out", "bad"]
        let r = try await MPI.run(
            1, CLI.binary, args + [":", "-np", "1", "-x", "FMNIST_DIR=/nonexistent", CLI.binary.path] + args, in: dir)
        #expect(r.status != 0 && !r.timedOut, "\(r)")
        #expect(r.stderr.contains("rank 1 of 2"), "\(r)")
    }

}
