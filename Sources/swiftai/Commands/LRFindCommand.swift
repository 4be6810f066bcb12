import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAILearner

/// `swiftai lr-find`: fastai's learning-rate finder on the training recipe.
struct LRFindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lr-find",
        abstract: "fastai's learning-rate finder; writes lr_find.png and ends with the suggestions as JSON.")
    @OptionGroup var recipe: RecipeOptions
    @OptionGroup var output: OutputFolderOption
    @Option(help: "Iterations.") var numIt = 100

    /// Under `mpirun` the ranks run the finder's steps together (global batch, mean loss); rank 0 reports.
    func run() throws {
        let group = try ProcessGroup.fromEnvironment()
        let learn = try recipe.prepare(lr: 1e-3)
        var found: SuggestedLRs?
        try learn.distributed(group) { found = try learn.lrFind(numIt: numIt) }
        guard group.isMain, let s = found else { return }
        try output.create()
        let plot = output.path("lr_find.png")
        try s.plot(to: plot)
        print(
            String(
                format: "minimum %.2e  steep %.2e  valley %.2e  slide %.2e (plot: %@)", s.minimum, s.steep,
                s.valley, s.slide, plot))
        print(
            jsonLine([
                "minimum": Scientific(s.minimum), "steep": Scientific(s.steep), "valley": Scientific(s.valley),
                "slide": Scientific(s.slide)
            ]))
    }
}
