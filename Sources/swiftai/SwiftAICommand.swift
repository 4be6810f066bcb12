import ArgumentParser
import Foundation
import SwiftAICore

@main
struct SwiftAICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftai",
        abstract: "SwiftAI: fastai-style deep learning in Swift.",
        subcommands: [
            TrainCommand.self,
            EnsembleCommand.self,
            LRFindCommand.self,
            SummaryCommand.self,
            PredictCommand.self,
            EvaluateCommand.self,
            ExportCommand.self,
            ServeCommand.self,
            PruneCommand.self,
            QuantizeCommand.self,
            DataCommand.self,
            BenchCommand.self
        ])
}

extension SwiftAICommand {
    /// Parses the command line and runs the command; the one place errors become messages and exit codes.
    ///
    /// Parsing and `validate()` errors, `--help` and the like are ArgumentParser's: its message and usage, exit code
    /// 64 (0 for help). An error thrown while one of SwiftAI's commands runs is printed once as `error: …` on stderr,
    /// after what the command printed on stdout, with exit code 1. A command that reported its failure itself (e.g.
    /// `predict`'s JSON error lines) throws `ExitCode`, which sets the exit code and prints nothing.
    static func main() {
        var command: ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do {
            try command.run()
            ProcessGroup.active?.finalize()
        } catch {
            // ArgumentParser's own commands (`help`) report through it.
            exit(withError: commandTypes.contains(ObjectIdentifier(type(of: command))) ? reported(error) : error)
        }
    }

    /// A run-time error written to stderr (unless it is an exit code or a clean exit), and what to exit with.
    ///
    /// Under `mpirun`, the message names the rank, and an error of this rank alone ends the whole job (`MPI_Abort`)
    /// so that no other rank waits for it; one every rank reached together (ranks that differ) is printed by rank 0.
    static func reported(_ error: Error) -> Error {
        let group = ProcessGroup.active
        if error is ExitCode || error is CleanExit {
            group?.finalize()
            return error
        }
        fflush(stdout)
        guard let group, group.size > 1 else {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            return ExitCode.failure
        }
        if case DistributedError.ranksDiffer = error {
            if group.isMain { FileHandle.standardError.write(Data("error: \(error)\n".utf8)) }
            group.finalize()
            return ExitCode.failure
        }
        FileHandle.standardError.write(Data("error: rank \(group.rank) of \(group.size): \(error)\n".utf8))
        group.abort(exitCode: 1)
    }

    /// The types of every command under `swiftai`.
    static let commandTypes: Set<ObjectIdentifier> = {
        func tree(_ command: ParsableCommand.Type) -> [ParsableCommand.Type] {
            [command] + command.configuration.subcommands.flatMap(tree)
        }
        return Set(tree(SwiftAICommand.self).map(ObjectIdentifier.init))
    }()
}
