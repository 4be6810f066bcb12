import ArgumentParser
import Foundation
import SwiftAILearner

/// `swiftai lr-find`: fastai's learning-rate finder on the training recipe.
struct LRFindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lr-find",
        abstract: "fastai's learning-rate finder; writes lr_find.png and ends with the suggestions as JSON.")
    @OptionGroup var recipe: RecipeOptions
    @OptionGroup var output: OutputFolderOption
    @Option(help: "Iterations.") var numIt = 100

    func run() throws {
        let learn = try recipe.prepare(lr: 1e-3)
        try output.create()
        let s = try learn.lrFind(numIt: numIt)
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
