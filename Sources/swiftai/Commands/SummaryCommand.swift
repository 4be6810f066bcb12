import ArgumentParser
import SwiftAICore
import SwiftAIData
import SwiftAILearner

/// `swiftai summary`: fastai's model summary of the training recipe's model, or of a torchvision ResNet.
struct SummaryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: """
            Model summary: module, output shapes, parameters, MFLOPs. A torchvision arch without --data is summarised \
            as torchvision builds it.
            """)
    @OptionGroup var recipe: RecipeOptions
    @Option(help: "Classes of a torchvision arch summarised on its own (torchvision's default 1000).") var nOut = 1000

    func run() throws {
        let learn: Learner
        if case let .torchvision(r) = recipe.arch, recipe.folder.data == nil {
            // torchvision's model itself, on a batch of two random images of --size.
            let s = recipe.folder.size
            let x = Tensor.randn([2, 3, s, s]), y = Tensor.randint(0, nOut, [2])
            let dls = DataLoaders(train: DataLoader(x, y, batchSize: 2), valid: DataLoader(x, y, batchSize: 2))
            learn = Learner(
                model: r.make(numClasses: nOut, generator: Generator(seed: recipe.seed)), dls: dls,
                progress: false)
        } else {
            learn = try recipe.prepare(lr: 1e-3)
        }
        let summary = try learn.summary()
        print(summary)
        print(
            jsonLine([
                "model": recipe.arch.description, "params": summary.totalParams,
                "mflops": Rounded(summary.totalMFLOPs, 1)
            ]))
    }
}
