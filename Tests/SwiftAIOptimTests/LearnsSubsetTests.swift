import Testing
import SwiftAICore
import SwiftAIData
import SwiftAINN
import SwiftAIOptim

/// A small CNN built from the layers, trained with each optimizer on a Fashion-MNIST subset.
@Suite struct LearnsSubsetTests {
    static let data: (x: Tensor, y: Tensor, vx: Tensor, vy: Tensor)? = {
        guard let ds = try? FashionMNIST() else {
            print("note: Fashion-MNIST not installed (make setup); skipping the training test")
            return nil
        }
        let x = FashionMNIST.normalise(ds.trainImages[0..<2048]).unsqueeze(1)
        let vx = FashionMNIST.normalise(ds.testImages[0..<512]).unsqueeze(1)
        return (x, ds.trainLabels[0..<2048], vx, ds.testLabels[0..<512])
    }()

    static func model(_ gen: Generator) -> Sequential {
        let act: ActivationFactory = { GeneralRelu(leak: 0.1, sub: 0.4) }
        let norm: NormFactory = { BatchNorm2d($0) }
        return Sequential(
            conv(1, 8, act: act, norm: norm, generator: gen), conv(8, 16, act: act, norm: norm, generator: gen),
            conv(16, 32, act: act, norm: norm, generator: gen), conv(32, 64, act: act, norm: norm, generator: gen),
            GlobalAvgPool(), Linear(64, 10, generator: gen))
    }

    @Test(arguments: ["sgd", "rmsprop", "adam", "adamw", "auto-anneal"])
    func smallCNNLearns(_ name: String) throws {
        guard let d = Self.data else { return }
        let gen = Generator(seed: 1)
        let m = Self.model(gen)
        for mod in m.modules() { if let c = mod as? Conv2d { Init.kaimingNormal(c.weight, a: 0.1, generator: gen) } }
        let opt: Optimizer
        switch name {
        case "sgd": opt = SGD(m.parameters(), lr: 0.1, momentum: 0.9)
        case "rmsprop": opt = RMSProp(m.parameters(), lr: 3e-3)
        case "adam": opt = Adam(m.parameters(), lr: 1e-2)
        case "adamw": opt = AdamW.fastai(m, lr: 1e-2)
        default: opt = AutoAnnealAdam(m.parameters(), lr: 1e-2)
        }
        let lossFn = CrossEntropyLoss()
        var losses: [Double] = []
        for _ in 0..<3 {
            let perm = Tensor(gen.permutation(2048).map(Int64.init))
            for b in stride(from: 0, to: 2048, by: 64) {
                let idx = perm[b..<(b + 64)]
                let loss = lossFn(m(d.x.indexSelect(dim: 0, index: idx)), d.y.indexSelect(dim: 0, index: idx))
                loss.backward()
                opt.step()
                opt.zeroGrad()
                losses.append(loss.item())
            }
        }
        m.eval()
        let preds = noGrad { m(d.vx) }.argmax(dim: 1)
        let accuracy = (preds .== d.vy).to(.float32).mean().item()
        let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
        #expect(last < first * 0.6, "\(name): loss \(first) → \(last)")
        #expect(accuracy > 0.6, "\(name): validation accuracy \(accuracy)")
    }
}
