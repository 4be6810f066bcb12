import ArgumentParser
import Foundation

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
        do { try command.run() } catch {
            // ArgumentParser's own commands (`help`) report through it.
            exit(withError: commandTypes.contains(ObjectIdentifier(type(of: command))) ? reported(error) : error)
        }
    }

    /// A run-time error written to stderr (unless it is an exit code or a clean exit), and what to exit with.
    static func reported(_ error: Error) -> Error {
        if error is ExitCode || error is CleanExit { return error }
        fflush(stdout)
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        return ExitCode.failure
    }

    /// The types of every command under `swiftai`.
    static let commandTypes: Set<ObjectIdentifier> = {
        func tree(_ command: ParsableCommand.Type) -> [ParsableCommand.Type] {
            [command] + command.configuration.subcommands.flatMap(tree)
        }
        return Set(tree(SwiftAICommand.self).map(ObjectIdentifier.init))
    }()
}
