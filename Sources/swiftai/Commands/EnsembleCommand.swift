import ArgumentParser
import SwiftAICore
import SwiftAILearner

/// `swiftai ensemble RUN…`: the lesson's ensemble of saved validation probabilities.
struct EnsembleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ensemble",
        abstract: "The lesson's ensemble: averages the validation probabilities saved by several `swiftai train` runs.",
        discussion: """
            Reads preds.safetensors from each folder; prints one JSON line with each run's and the ensemble's accuracy \
            for every kind of prediction all runs saved (preds, tta_preds, flip_preds).
            """)
    @Argument(help: "Output folders of `swiftai train` runs on the same validation set.") var runs: [String]

    func validate() throws {
        guard runs.count >= 2 else { throw ValidationError("give two or more run folders") }
    }

    func run() throws {
        let loaded = try runs.map { dir in
            do { return try Safetensors.read(path: dir + "/preds.safetensors").tensors } catch {
                throw ValidationError("\(dir): \(error) — was it written by `swiftai train` of this version?")
            }
        }
        let targets = loaded[0]["targets"]!
        for (dir, p) in zip(runs, loaded)
        where p["targets"]?.shape != targets.shape || p["targets"]!.floats != targets.floats {
            throw ValidationError(
                "\(dir) was validated on other items than \(runs[0]); an ensemble needs the same validation set")
        }
        var fields: [(String, Any)] = [("runs", runs.count)]
        for key in ["preds", "tta_preds", "flip_preds"] where loaded.allSatisfy({ $0[key] != nil }) {
            let each = loaded.map { Rounded(Metric.accuracy.fn($0[key]!, targets), 4) }
            let mean = loaded.dropFirst().reduce(loaded[0][key]!) { $0 + $1[key]! } / Double(loaded.count)
            fields += [(key + "_each", each), (key + "_ensemble", Rounded(Metric.accuracy.fn(mean, targets), 4))]
        }
        print(jsonLine(fields))
    }
}
