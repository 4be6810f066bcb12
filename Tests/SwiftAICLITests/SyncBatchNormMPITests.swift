import Foundation
import Testing

/// SyncBatchNorm across processes: `swiftai-mpi-check syncBatchNorm` under `mpirun` compares every rank's results
/// with BatchNorm2d on the whole batch.
@Suite struct SyncBatchNormMPITests {
    /// `mpirun` from PATH.
    static let launcher: URL? = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        .map { URL(fileURLWithPath: String($0)).appendingPathComponent("mpirun") }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }

    /// `swiftai-mpi-check`, next to the test bundle in the build folder.
    static let checker: URL = {
        var dir = Bundle.main.bundleURL
        if let xctest = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            dir = xctest.bundleURL.deletingLastPathComponent()  // macOS: the bundle is a folder in the build folder
        }
        return dir.appendingPathComponent("swiftai-mpi-check")
    }()

    @Test(.enabled(if: launcher != nil, "mpirun is not on PATH"), arguments: [2, 3])
    func syncBatchNormMatchesOneProcess(ranks: Int) async throws {
        let run = try await Self.run(ranks: ranks, ["syncBatchNorm"], timeout: 60)
        let outcome = run.timedOut ? "timed out" : "exit \(run.status)"
        #expect(
            run.status == 0 && !run.timedOut,
            "mpirun -np \(ranks) swiftai-mpi-check syncBatchNorm → \(outcome)\n\(run.output)")
    }

    /// Runs the scenario on `ranks` processes (one thread each), stopped after `timeout` seconds; returns the exit
    /// status, whether it was stopped, and the output.
    static func run(ranks: Int, _ arguments: [String], timeout: Double) async throws -> (
        status: Int32, timedOut: Bool, output: String
    ) {
        let process = Process()
        process.executableURL = launcher
        process.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", checker.path] + arguments
        var environment = ProcessInfo.processInfo.environment
        for key in [
            "OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "SWIFTAI_NUM_THREADS", "OMP_NUM_THREADS"
        ] {
            environment[key] = "1"
        }
        process.environment = environment
        // Output to a file, not a pipe: nothing blocks on a full pipe.
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("mpirun-\(UUID().uuidString).log")
        try Data().write(to: log)
        let handle = try FileHandle(forWritingTo: log)
        defer {
            try? handle.close()
            try? FileManager.default.removeItem(at: log)
        }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        let timer = DispatchWorkItem { if process.isRunning { process.terminate() } }  // mpirun stops the ranks
        let started = Date()
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, Error>) in
            process.terminationHandler = { _ in done.resume() }
            do {
                try process.run()
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
            } catch {
                process.terminationHandler = nil
                done.resume(throwing: error)
            }
        }
        timer.cancel()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return (process.terminationStatus, Date().timeIntervalSince(started) >= timeout, output)
    }
}
