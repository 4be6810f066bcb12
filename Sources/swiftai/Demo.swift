import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// `swiftai demo`: a few SGD steps of the Fashion-MNIST ResNet on one fixed batch, printing the loss as it falls.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train the Fashion-MNIST ResNet on one batch for a few steps.")
    @Option(help: "Steps.") var steps = 8
    @Option(help: "Batch size.") var bs = 256
    @Option(help: "Learning rate.") var lr = 0.1

    func run() {
        let gen = Generator(seed: 42)
        let net = FashionMNISTModel.resnet.make(generator: gen)
        let opt = SGD(net.parameters(), lr: lr, momentum: 0.9)
        let x = Tensor.randn([bs, 1, 28, 28], generator: gen)
        let y = Tensor.randint(0, 10, [bs], generator: gen)
        for step in 0..<steps {
            let loss = crossEntropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zeroGrad()
            print("step \(step)  loss \(formatted(loss.item()))")
        }
    }
}

func formatted(_ v: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", v) }
