import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

/// Layers against PyTorch's values (the ops fixture), or finite differences where the fixture has none.
@Suite struct LayerTests {
    func opsCase(_ name: String) throws -> [String: Tensor]? {
        guard let f = try loadFixture("ops") else { return nil }
        var out: [String: Tensor] = [:]
        for (k, v) in f.tensors where k.hasPrefix(name + ".") { out[String(k.dropFirst(name.count + 1))] = v }
        return out
    }

    /// Forward with `x`, backward with the fixture's upstream gradient, compare output and input gradient.
    func checkModule(
        _ m: Module, _ c: [String: Tensor], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let x = c["input"]!.requiringGrad()
        let y = m(x)
        expectClose(y, c["output"]!, "\(what) output", sourceLocation: sourceLocation)
        y.backward(c["grad_output"]!)
        expectClose(x.grad!, c["grad.input"]!, "\(what) grad.input", sourceLocation: sourceLocation)
    }

    @Test func convAndLinearLoadPyTorchWeights() throws {
        guard let c0 = try opsCase("conv2d_0"), let c1 = try opsCase("conv2d_1"), let l = try opsCase("linear_0") else {
            return
        }
        let conv = Conv2d(3, 4, kernelSize: 3, padding: 1)
        try conv.load(stateDict: ["weight": c0["weight"]!, "bias": c0["bias"]!])
        checkModule(conv, c0, "Conv2d")
        expectClose(conv.weight.grad!, c0["grad.weight"]!, "Conv2d grad.weight")
        expectClose(conv.bias!.grad!, c0["grad.bias"]!, "Conv2d grad.bias")
        let conv2 = Conv2d(2, 5, kernelSize: 3, stride: 2, padding: 1, bias: false)
        try conv2.load(stateDict: ["weight": c1["weight"]!])
        checkModule(conv2, c1, "Conv2d stride 2")
        let lin = Linear(7, 3)
        try lin.load(stateDict: ["weight": l["weight"]!, "bias": l["bias"]!])
        checkModule(lin, l, "Linear")
        expectClose(lin.weight.grad!, l["grad.weight"]!, "Linear grad.weight")
    }

    @Test func batchNormModulesFollowPyTorch() throws {
        for (name, twoD) in [("batchnorm_0", true), ("batchnorm_1", true), ("batchnorm_2", false)] {
            guard let c = try opsCase(name) else { return }
            let n = c["weight"]!.count
            let bn: BatchNorm = twoD ? BatchNorm2d(n) : BatchNorm1d(n)
            var sd = bn.stateDict()
            for k in ["weight", "bias", "running_mean", "running_var"] { sd[k] = c[k]! }
            try bn.load(stateDict: sd)
            let training = name != "batchnorm_1"
            bn.train(training)
            checkModule(bn, c, name)
            expectClose(bn.weight!.grad!, c["grad.weight"]!, "\(name) grad.weight")
            expectClose(bn.bias!.grad!, c["grad.bias"]!, "\(name) grad.bias")
            expectClose(bn.runningMean!.value, c["running_mean_after"]!, "\(name) running_mean")
            expectClose(bn.runningVar!.value, c["running_var_after"]!, "\(name) running_var")
            #expect(bn.numBatchesTracked!.value.item() == (training ? 1 : 0))
        }
        // momentum nil = cumulative average (PyTorch's momentum=None)
        let bn = BatchNorm1d(2, momentum: nil)
        _ = bn(Tensor([1.0, 2, 3, 4], shape: [2, 2]).to(.float32))
        _ = bn(Tensor([5.0, 6, 7, 8], shape: [2, 2]).to(.float32))
        expectClose(bn.runningMean!.value, Tensor([Float(4), 5]), "cumulative running mean")
        let noStats = BatchNorm2d(3, affine: false, trackRunningStats: false)
        #expect(noStats.parameters().isEmpty && noStats.namedBuffers().isEmpty)
        noStats.eval()
        let y = noStats(Tensor.randn([4, 3, 2, 2]))
        #expect(abs(y.mean().item()) < 1e-5)  // still batch statistics in eval
    }

    @Test func poolingActivationAndGeneralRelu() throws {
        if let c = try opsCase("avgpool_0") { checkModule(AvgPool2d(2, ceilMode: true), c, "AvgPool2d") }
        if let c = try opsCase("maxpool_2") { checkModule(MaxPool2d(3, stride: 2, padding: 1), c, "MaxPool2d") }
        if let c = try opsCase("general_relu_0") { checkModule(GeneralRelu(leak: 0.1, sub: 0.4), c, "GeneralRelu") }
        if let c = try opsCase("global_avg_pool_0") { checkModule(GlobalAvgPool(), c, "GlobalAvgPool") }
        let x = randn([2, 3, 4, 5], seed: 1)
        gradcheck([x], "GeneralRelu maxv") { GeneralRelu(leak: 0.1, sub: 0.4, maxv: 0.5)($0[0]) }
        gradcheck([x], "AdaptiveConcatPool2d") { AdaptiveConcatPool2d()($0[0]) }
        gradcheck([x], "AdaptiveAvgPool2d") { AdaptiveAvgPool2d((2, 2))($0[0]) }
        gradcheck([x], "Flatten") { Flatten()($0[0]) }
        gradcheck([x], "Sigmoid, Tanh, LeakyReLU, ReLU") {
            Sequential(Sigmoid(), Tanh(), LeakyReLU(0.2), Lambda { $0 - 0.5 }, ReLU())($0[0])
        }
        #expect(AdaptiveConcatPool2d()(x).shape == [2, 6, 1, 1])
        let cat = AdaptiveConcatPool2d()(x)
        #expect(cat[0, 0, 0, 0].item() == x[0, 0].max().item())  // max half first, as fastai
        #expect(abs(cat[0, 3, 0, 0].item() - x[0, 0].mean().item()) < 1e-12)
        #expect(Identity()(x).doubles == x.doubles)
    }

    @Test func dropoutScalesAndIsSeeded() {
        let x = Tensor.ones([10_000])
        let d = Dropout(0.3, generator: Generator(seed: 5))
        let y = d(x)
        let kept = y.floats.filter { $0 != 0 }
        #expect(abs(Double(kept.count) / 10_000 - 0.7) < 0.02)
        #expect(kept.allSatisfy { abs($0 - 1 / 0.7) < 1e-6 })
        #expect(Dropout(0.3, generator: Generator(seed: 5))(x).floats == y.floats)
        d.eval()
        #expect(d(x).floats == x.floats)
        let d2 = Dropout2d(0.5, generator: Generator(seed: 6))(Tensor.ones([4, 8, 3, 3]))
        let perChannel = d2.sum(dims: [2, 3]).floats
        #expect(perChannel.allSatisfy { $0 == 0 || abs($0 - 18) < 1e-5 })
    }

    @Test func convHelperAndResBlock() {
        let c = conv(3, 8, ks: 3, stride: 2, act: { ReLU() }, norm: { BatchNorm2d($0) })
        #expect(c.namedParameters().map(\.0) == ["0.weight", "1.weight", "1.bias"])  // no conv bias before BN
        #expect(conv(3, 8).namedParameters().map(\.0) == ["0.weight", "0.bias"])
        let rb = ResBlock(4, 8, stride: 2, norm: { BatchNorm2d($0) }, zeroInitLastNorm: true)
        #expect(rb.pool is AvgPool2d && !(rb.idconv is Identity))
        let x = Tensor.randn([2, 4, 5, 5])
        let y = rb(x)
        #expect(y.shape == [2, 8, 3, 3])
        // Zero-initialised last BN: the block is act(idconv(pool(x))).
        let expected = rb.act(rb.idconv(rb.pool(x)))
        expectClose(y, expected, rtol: 1e-6, atol: 1e-6, "zero-init ResBlock")
        let same = ResBlock(4, 4)
        #expect(same.idconv is Identity && same.pool is Identity)
        gradcheck([randn([2, 2, 4, 4], seed: 9)], "ResBlock") { x in
            let b = ResBlock(2, 3, stride: 2, norm: nil, generator: Generator(seed: 1))
            b.to(.float64)
            return b(x[0])
        }
    }

    @Test func initialisers() {
        let w = Parameter(Tensor.zeros([256, 128, 3, 3]))
        Init.kaimingNormal(w, a: 0.1, generator: Generator(seed: 1))
        let std = w.value.std().item(), expected = (2 / 1.01).squareRoot() / (128.0 * 9).squareRoot()
        #expect(abs(std / expected - 1) < 0.01)
        Init.kaimingUniform(w, nonlinearity: .relu, generator: Generator(seed: 2))
        let bound = 2.0.squareRoot() * (3 / (128.0 * 9)).squareRoot()
        #expect(w.value.max().item() <= bound && w.value.min().item() >= -bound && w.value.max().item() > 0.95 * bound)
        Init.kaimingNormal(w, mode: .fanOut, nonlinearity: .relu, generator: Generator(seed: 3))
        #expect(abs(w.value.std().item() / (2.0 / (256 * 9)).squareRoot() - 1) < 0.01)
        let l = Parameter(Tensor.zeros([300, 200]))
        Init.xavierUniform(l, generator: Generator(seed: 4))
        #expect(abs(l.value.max().item() - (6.0 / 500).squareRoot()) < 0.01)
        Init.xavierNormal(l, gain: Init.gain(.tanh), generator: Generator(seed: 5))
        #expect(abs(l.value.std().item() / (5.0 / 3 * (2.0 / 500).squareRoot()) - 1) < 0.02)
        Init.normal(l, mean: 2, std: 0.5, generator: Generator(seed: 6))
        #expect(abs(l.value.mean().item() - 2) < 0.01)
        Init.constant(l, 3)
        #expect(l.value.mean().item() == 3)
        #expect(Init.gain(.leakyRelu, param: 0.1) == (2 / 1.01).squareRoot())
        // Default Linear/Conv2d init is PyTorch's: weights and biases within ±1/√fan_in.
        let lin = Linear(100, 50, generator: Generator(seed: 7))
        #expect(lin.weight.value.abs().max().item() <= 0.1 && lin.bias!.value.abs().max().item() <= 0.1)
    }

    @Test func lsuvGivesUnitVarianceActivations() {
        let gen = Generator(seed: 11)
        let model = Sequential(
            conv(1, 8, act: { GeneralRelu(leak: 0.1, sub: 0.4) }, generator: gen),
            conv(8, 16, act: { GeneralRelu(leak: 0.1, sub: 0.4) }, generator: gen),
            conv(16, 16, act: { GeneralRelu(leak: 0.1, sub: 0.4) }, generator: gen))
        let xb = Tensor.randn([64, 1, 28, 28], generator: gen)
        let stats = Init.lsuv(model, batch: xb)
        #expect(stats.count == 3)
        // Check the activations independently of what lsuv reported.
        var acts: [Tensor] = []
        let hooks = model.modules().filter { $0 is GeneralRelu }.map {
            $0.registerForwardHook { _, _, o in acts.append(o) }
        }
        _ = noGrad { model(xb) }
        hooks.forEach { $0.remove() }
        #expect(acts.count == 3)
        for a in acts {
            #expect(abs(a.mean().item()) < 1e-2 && abs(a.std().item() - 1) < 1e-2)
        }
    }

    @Test func lossesMatchDefinitions() {
        let p = randn([4, 3], seed: 20), t = randn([4, 3], seed: 21)
        let pd = p.doubles, td = t.doubles
        let mse = zip(pd, td).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / 12
        #expect(abs(MSELoss()(p, t).item() - mse) < 1e-12)
        let l1 = zip(pd, td).map { abs($0 - $1) }.reduce(0, +)
        #expect(abs(L1Loss(reduction: .sum)(p, t).item() - l1) < 1e-12)
        let y = Tensor((0..<12).map { Double($0 % 2) }, shape: [4, 3])
        let pw = Tensor([2.0, 1, 0.5])
        func bce(_ x: Double, _ y: Double, _ w: Double) -> Double {
            let s = 1 / (1 + exp(-x))
            return -(w * y * log(s) + (1 - y) * log(1 - s))
        }
        let expected = (0..<12).map { bce(pd[$0], y.doubles[$0], pw.doubles[$0 % 3]) }
        expectClose(
            BCEWithLogitsLoss(posWeight: pw, reduction: .none)(p, y), Tensor(expected, shape: [4, 3]), rtol: 1e-10,
            atol: 1e-12, "bce")
        // Large logits stay finite.
        let big = BCEWithLogitsLoss()(Tensor([Float(80), -80]), Tensor([Float(0), 1])).item()
        #expect(abs(big - 80) < 1e-3)
        gradcheck([p], "mse") { mseLoss($0[0], t) }
        gradcheck([p], "l1") { l1Loss($0[0], t) }
        gradcheck([p], "bce with logits") { binaryCrossEntropyWithLogits($0[0], y, posWeight: pw) }
        let logits = randn([5, 4], seed: 22), labels = Tensor([Int64(0), 3, 1, 1, 2])
        gradcheck([logits], "CrossEntropyLoss smoothing") { CrossEntropyLoss(labelSmoothing: 0.1)($0[0], labels) }
        gradcheck([logits], "NLLLoss") { NLLLoss()($0[0].logSoftmax(dim: 1), labels) }
        #expect(CrossEntropyLoss().with(reduction: .none)(logits, labels).shape == [5])
    }
}
