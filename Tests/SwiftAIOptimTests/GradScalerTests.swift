import Testing
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

@Suite struct GradScalerTests {
    @Test func defaultsAreTorchs() {
        let s = GradScaler()
        #expect(s.scale == 65536 && s.growthFactor == 2 && s.backoffFactor == 0.5 && s.growthInterval == 2000)
    }

    @Test func scaleDoublesAfterGrowthIntervalGoodStepsAndHalvesOnOverflow() {
        let s = GradScaler(initScale: 8, growthInterval: 3)
        s.update(foundInf: false)
        s.update(foundInf: false)
        #expect(s.scale == 8 && s.growthTracker == 2)
        s.update(foundInf: false)
        #expect(s.scale == 16 && s.growthTracker == 0)
        s.update(foundInf: false)
        s.update(foundInf: true)  // an overflow halves the scale and restarts the count
        #expect(s.scale == 8 && s.growthTracker == 0)
    }

    @Test func infGradientSkipsTheStepAndLeavesOptimizerStateAlone() {
        let w = Parameter(Tensor([Float(1), -2]))
        let opt = SGD([w], lr: 0.1, momentum: 0.9)
        let s = GradScaler(initScale: 4)
        s.scaled((w.value * w.value).sum()).backward()
        #expect(s.step(opt))
        opt.zeroGrad()
        let before = w.value.floats, buffer = opt.state(for: w)!.momentumBuffer!.floats
        w.grad = Tensor([Float.infinity, 1])
        #expect(!s.step(opt))
        #expect(w.value.floats == before)
        #expect(opt.state(for: w)!.momentumBuffer!.floats == buffer)
        #expect(opt.stepCount == 1)
        #expect(s.scale == 2)
    }

    @Test func optimizerSeesUnscaledGradients() {
        let x = Tensor([Float(0.5), -3, 0.25])
        let plain = Parameter(Tensor([Float(1), 2, -1])), scaled = Parameter(Tensor([Float(1), 2, -1]))
        (plain.value * plain.value * x).sum().backward()
        let s = GradScaler(initScale: 1024)
        s.scaled((scaled.value * scaled.value * x).sum()).backward()
        #expect(scaled.grad!.floats == plain.grad!.floats.map { $0 * 1024 })
        #expect(s.unscale([scaled]))
        #expect(scaled.grad!.floats == plain.grad!.floats)
        // And through `step`: the same SGD update as without scaling.
        let optPlain = SGD([plain], lr: 0.1), optScaled = SGD([scaled], lr: 0.1)
        optPlain.zeroGrad()
        optScaled.zeroGrad()
        s.scaled((scaled.value * x).sum()).backward()
        (plain.value * x).sum().backward()
        optPlain.step()
        #expect(s.step(optScaled))
        #expect(scaled.value.floats == plain.value.floats)
    }

    /// The same scripted gradients through `torch.amp.GradScaler("cpu", init_scale=4, growth_interval=2)` and SGD
    /// (lr 0.1) give these scales and weights (torch 2.9.1): `s.scale(w * g).sum().backward(); s.step(opt);
    /// s.update()`.
    @Test func matchesTorchGradScalerSequence() {
        let w = Parameter(Tensor([Float(1)]))
        let opt = SGD([w], lr: 0.1)
        let s = GradScaler(initScale: 4, growthInterval: 2)
        var scales: [Double] = [], weights: [Float] = []
        for g in [1, 2, 3, Double.infinity, 1, .nan, 1, 1, 1] {
            opt.zeroGrad()
            s.scaled((w.value * g).sum()).backward()
            s.step(opt)
            scales.append(s.scale)
            weights.append(w.value.floats[0])
        }
        #expect(scales == [4, 8, 8, 4, 4, 2, 2, 4, 4])
        let torchWeights: [Float] = [0.9, 0.7, 0.4, 0.4, 0.3, 0.3, 0.2, 0.1, 0]
        #expect(zip(weights, torchWeights).allSatisfy { abs($0 - $1) < 1e-6 }, "\(weights)")
    }
}
