import ArgumentParser
import SwiftAILearner
import SwiftAINN

/// `swiftai prune MODEL`: L1 unstructured pruning of an export bundle, fine-tuned with the masks kept, or structured
/// channel pruning (`--structured`) that makes the model smaller.
struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Prune an export bundle, fine-tune it, write a new bundle.",
        discussion: """
            L1 unstructured (default): the smallest-magnitude share of conv/linear weights set to zero, kept at zero \
            while fine-tuning. --structured: the output channels with the smallest filter L1 norms removed from every \
            convolution no residual add reads (with their BatchNorm entries and the next convolution's inputs), so the \
            model is smaller and faster.
            Data for fine-tuning and the accuracy before/after: --data DIR (split and labels as `train`) or \
            Fashion-MNIST. Ends with one JSON line.
            """)
    @OptionGroup var bundle: BundleArgument
    @Option(
        help: """
            Share of the weights (or with --structured, of each pruned convolution's channels) to prune (0…1).
            """)
    var amount = 0.5
    @Option(help: "global (rank all layers' weights together) or per-layer; unstructured only.") var scope = "global"
    @Flag(help: "Remove whole channels instead of masking weights.") var structured = false
    @Option(help: "Epochs of one-cycle fine-tuning with the masks kept (0: none).") var fineTune = 1
    @Option(help: "Peak learning rate of the fine-tuning.") var lr = 1e-3
    @OptionGroup var folder: ImageFolderOptions
    @OptionGroup var fmnist: FashionMNISTOption
    @Option(help: "The pruned bundle.") var to: String

    func validate() throws {
        guard (0...1).contains(amount), fineTune >= 0, lr > 0, PruningScope(rawValue: scope) != nil else {
            throw ValidationError(
                "--amount must be in [0, 1], --fine-tune ≥ 0, --lr positive, --scope global or per-layer")
        }
    }

    func run() throws {
        let learn = try bundle.load(fused: false)
        let dls = try folder.trainingData(fmnist, for: learn)
        let pipeline = learn.dls
        learn.dls = dls
        func accuracy() throws -> Double {
            let r = try learn.getPreds()
            return Metric.accuracy.fn(r.preds, r.targets)
        }
        let before = try accuracy(), parametersBefore = learn.model.parameterCount
        var summary: [(String, Any)] = [("model", to)]
        if structured {
            try learn.pruneChannels(amount: amount)
            summary += [("parameters_before", parametersBefore), ("parameters_after", learn.model.parameterCount)]
        } else {
            let masks = learn.model.pruneL1Unstructured(amount: amount, scope: PruningScope(rawValue: scope)!)
            learn.add(KeepPruned(masks))
            summary.append(("sparsity", Rounded(masks.sparsity, 4)))
        }
        let pruned = try accuracy()
        if fineTune > 0 { try learn.fitOneCycle(fineTune, lrMax: lr) }
        let after = try accuracy()
        learn.dls = pipeline  // the bundle's own inference pipeline
        try learn.export(to: to)
        print(
            jsonLine(
                summary + [
                    ("accuracy_before", Rounded(before, 4)), ("accuracy_pruned", Rounded(pruned, 4)),
                    ("accuracy_fine_tuned", Rounded(after, 4))
                ]))
    }
}
