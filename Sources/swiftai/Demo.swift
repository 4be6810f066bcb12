import ArgumentParser
import SwiftAICore

/// `swiftai demo`: a few SGD steps of the Fashion-MNIST ResNet built from Core ops on one fixed batch,
/// printing the loss as it falls.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train the Core-ops ResNet on one batch for a few steps.")
    @Option(help: "Steps.") var steps = 8
    @Option(help: "Batch size.") var bs = 256
    @Option(help: "Learning rate.") var lr = 0.1

    func run() {
        let gen = Generator(seed: 42)
        var net = CoreResNet(generator: gen)
        let x = Tensor.randn([bs, 1, 28, 28], generator: gen)
        let y = Tensor.randint(0, 10, [bs], generator: gen)
        for step in 0..<steps {
            let loss = crossEntropy(net.forward(x), y)
            loss.backward()
            noGrad {
                for (k, p) in net.params { net.params[k] = (p - p.grad! * lr).requiringGrad() }
            }
            print("step \(step)  loss \(String(format: "%.4f", loss.item()))")
        }
    }
}
