import ArgumentParser
import Foundation

/// What `train --resume RUN` needs from the run it continues: the arguments it started with (and the folder they
/// were relative to), kept in RUN/run.json, and its checkpoint.
enum RunArguments {
    static let file = "run.json", checkpoint = "checkpoint.safetensors"

    struct Saved: Codable {
        var arguments: [String]
        var directory: String
    }

    /// Writes `arguments` (those after `train`) and the working folder to `path`, atomically.
    static func save(_ arguments: [String], to path: String) throws {
        let saved = Saved(arguments: arguments, directory: FileManager.default.currentDirectoryPath)
        let data = try JSONEncoder().encode(saved)
        let tmp = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, path) == 0 else {
            throw CLIError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The command the run in folder `run` started with, in the folder it started in, and its checkpoint; `given`
    /// (this invocation's arguments after `train`) may repeat that run's arguments but not change them.
    static func resume(_ run: String, given: [String]) throws -> (TrainCommand, String) {
        let path = run + "/" + file, checkpointPath = URL(fileURLWithPath: run + "/" + checkpoint).standardized.path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIError("--resume: no \(file) in \(run) (the --out folder of a `swiftai train` run)")
        }
        guard let saved = try? JSONDecoder().decode(Saved.self, from: data) else {
            throw CLIError("--resume: \(path) is not a run's arguments file")
        }
        guard FileManager.default.fileExists(atPath: checkpointPath) else {
            throw CLIError(
                "--resume: \(run) has no \(checkpoint) yet (the run stopped before its first checkpoint): "
                    + "start it again")
        }
        if let difference = difference(original: saved.arguments, given: withoutResume(given)) {
            throw CLIError("--resume: \(difference); leave it out to continue the run as it started")
        }
        guard FileManager.default.changeCurrentDirectoryPath(saved.directory) else {
            throw CLIError("--resume: the run's folder \(saved.directory) is gone")
        }
        return (try TrainCommand.parse(saved.arguments), checkpointPath)
    }

    /// `arguments` without `--resume RUN` / `--resume=RUN`.
    static func withoutResume(_ arguments: [String]) -> [String] {
        var out: [String] = [], skip = false
        for a in arguments {
            if skip { skip = false; continue }
            if a == "--resume" { skip = true; continue }
            if a.hasPrefix("--resume=") { continue }
            out.append(a)
        }
        return out
    }

    /// The first option of `given` the original arguments do not have with the same value, in words.
    static func difference(original: [String], given: [String]) -> String? {
        let before = options(original), now = options(given)
        for (name, values) in now.sorted(by: { $0.key < $1.key }) where before[name] != values {
            let was = before[name].map { "\(name) \($0.joined(separator: " "))" } ?? "no \(name)"
            return "the run started with \(was); this asks for \(name) \(values.joined(separator: " "))"
        }
        return nil
    }

    /// `--name value`, `--name=value` and `--flag` tokens as name → values (a flag's value is empty).
    static func options(_ arguments: [String]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            guard a.hasPrefix("--") else { continue }
            if let eq = a.firstIndex(of: "=") {
                out[String(a[..<eq]), default: []].append(String(a[a.index(after: eq)...]))
            } else if i < arguments.count, !arguments[i].hasPrefix("--") {
                out[a, default: []].append(arguments[i])
                i += 1
            } else {
                out[a, default: []] += []
            }
        }
        return out
    }
}

/// A command's failure, in words (printed as `error: …`, exit code 1).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
