import Foundation
import Testing

/// What one run of the `swiftai` binary did.
struct CLIRun: CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let stdout: String
    let stderr: String
    let timedOut: Bool

    /// The JSON objects printed one per line on stdout.
    var jsonLines: [[String: Any]] {
        stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    /// The last JSON line (the commands end with one).
    var json: [String: Any] { jsonLines.last ?? [:] }

    var description: String {
        "swiftai \(arguments.joined(separator: " ")) → \(timedOut ? "timed out" : "exit \(status)")\n"
            + "stdout:\n\(stdout.suffix(2000))\nstderr:\n\(stderr.suffix(2000))"
    }
}

enum CLI {
    /// The package's root folder.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The binary: `SWIFTAI_BIN`, else `swiftai` next to the test bundle in the build folder.
    static let binary: URL = {
        if let path = ProcessInfo.processInfo.environment["SWIFTAI_BIN"] { return URL(fileURLWithPath: path) }
        var dir = Bundle.main.bundleURL
        if let xctest = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            dir = xctest.bundleURL.deletingLastPathComponent()  // macOS: the bundle is a folder in the build folder
        }
        return dir.appendingPathComponent("swiftai")
    }()

    /// Runs `swiftai arguments` (or `executable arguments`) in `directory`, stopped (and reported as timed out) after
    /// `timeout` seconds; with `signal`, sends it `signal.number` as soon as the file `signal.when` (relative to
    /// `directory`) exists — to its first child process instead with `signal.child` (a rank `mpirun` started).
    /// One OpenMP thread per run: the tests run side by side; kernel paths untimed (`SWIFTAI_PATH_CHOICE=first`).
    static func run(
        _ arguments: [String], in directory: URL, timeout: Double = 120, executable: URL? = nil,
        environment extra: [String: String] = [:], signal: (number: Int32, when: String, child: Bool)? = nil
    ) async throws -> CLIRun {
        let process = Process()
        process.executableURL = executable ?? binary
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFTAI_NUM_THREADS"] = "1"
        environment["OMP_NUM_THREADS"] = "1"
        // Kernel paths are not timed: runs the tests compare compute alike however loaded the machine is.
        environment["SWIFTAI_PATH_CHOICE"] = "first"
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        process.environment = environment.merging(extra) { _, b in b }
        // Output to files, not pipes: nothing blocks on a full pipe.
        let id = UUID().uuidString
        let outURL = directory.appendingPathComponent(".stdout-\(id)")
        let errURL = directory.appendingPathComponent(".stderr-\(id)")
        for url in [outURL, errURL] { try Data().write(to: url) }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        defer {
            try? out.close()
            try? err.close()
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let timer = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let started = Date()
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, Error>) in
            process.terminationHandler = { _ in done.resume() }
            do {
                try process.run()
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
                if let signal {
                    let file = directory.appendingPathComponent(signal.when).path, pid = process.processIdentifier
                    Thread.detachNewThread {
                        while process.isRunning && !FileManager.default.fileExists(atPath: file) { usleep(2000) }
                        guard process.isRunning else { return }
                        kill(signal.child ? (childProcesses(of: pid).first ?? pid) : pid, signal.number)
                    }
                }
            } catch {
                process.terminationHandler = nil
                done.resume(throwing: error)
            }
        }
        timer.cancel()
        let timedOut = process.terminationReason == .uncaughtSignal && Date().timeIntervalSince(started) >= timeout
        return CLIRun(
            arguments: arguments, status: process.terminationStatus,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "", timedOut: timedOut)
    }

    /// A safetensors file's tensor bytes without its header (whose metadata names the run).
    static func weightBytes(_ file: Data) -> Data {
        let n = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        return file.dropFirst(8 + n)
    }

    /// The processes `pid` started, from /proc.
    static func childProcesses(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0) }
    }

    /// A fresh temporary folder.
    static func temporaryDirectory(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A tiny two-class image folder (`a/`, `b/`, four PNGs each, from the vision tests' fixtures) at `dir`.
    static func writeImageFolder(at dir: URL) throws {
        let fixtures = root.appendingPathComponent("Tests/SwiftAIVisionTests/Fixtures/imageio")
        let classes = ["a": ["gray8", "rgb8", "pal8", "rgba8"], "b": ["gray16", "rgb16", "graya8", "pal4"]]
        for (label, files) in classes {
            let folder = dir.appendingPathComponent(label)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for name in files {
                try FileManager.default.copyItem(
                    at: fixtures.appendingPathComponent(name + ".png"),
                    to: folder.appendingPathComponent(name + ".png"))
            }
        }
    }
}
