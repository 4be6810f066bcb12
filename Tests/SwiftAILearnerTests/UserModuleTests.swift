import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

/// A user-written network calling the ops itself: `conv2d`, `linear` and `matmul` on its own parameters.
private final class OpsNet: Module {
    let convWeight: Parameter, convBias: Parameter, fcWeight: Parameter, fcBias: Parameter, out: Parameter

    /// Copies of `layers`' weights (a ``builtInNet()``), the last linear layer's transposed for `matmul`.
    init(copying layers: Sequential) {
        let (conv, fc, last) = (layers[0] as! Conv2d, layers[3] as! Linear, layers[5] as! Linear)
        func copy(_ t: Tensor) -> Parameter { Parameter(t.detached().clone()) }
        (convWeight, convBias) = (copy(conv.weight.value), copy(conv.bias!.value))
        (fcWeight, fcBias) = (copy(fc.weight.value), copy(fc.bias!.value))
        out = copy(last.weight.value.transpose(0, 1))
        super.init()
    }

    override func forward(_ x: Tensor) -> Tensor {
        let h = x.conv2d(weight: convWeight.value, bias: convBias.value, padding: 1).relu().flatten(startDim: 1)
        return h.linear(weight: fcWeight.value, bias: fcBias.value).relu().matmul(out.value)
    }
}

/// The same network from built-in layers.
private func builtInNet() -> Sequential {
    let g = Generator(seed: 11)
    return Sequential(
        Conv2d(2, 4, kernelSize: 3, padding: 1, generator: g), ReLU(), Flatten(),
        Linear(4 * 6 * 6, 8, generator: g), ReLU(), Linear(8, 3, bias: false, generator: g))
}

/// `net`'s weights in ``OpsNet``'s order and layout.
private func weights(_ net: Module) -> [Tensor] {
    if let s = net as? Sequential {
        let (conv, fc, last) = (s[0] as! Conv2d, s[3] as! Linear, s[5] as! Linear)
        return [conv.weight.value, conv.bias!.value, fc.weight.value, fc.bias!.value, last.weight.value.transpose(0, 1)]
    }
    let u = net as! OpsNet
    return [u.convWeight.value, u.convBias.value, u.fcWeight.value, u.fcBias.value, u.out.value]
}

/// Mixed precision is a context the ops consult: a user-written module calling them computes as the built-in
/// layers do, under `autocast` and under the `MixedPrecision` callback.
@Suite struct UserModuleMixedPrecisionTests {
    static let bf16 = CPUFeatures.lowPrecisionKernels(.bfloat16) != nil

    @Test(.enabled(if: bf16, "no bf16 kernels here (SWIFTAI_LOW_PRECISION=reference runs this on any CPU)"))
    func userOpsComputeInBF16UnderAutocastAsBuiltInLayersDo() {
        let builtIn = builtInNet(), user = OpsNet(copying: builtIn)
        let x = randn([5, 2, 6, 6], seed: 1).to(.float32), r = randn([5, 3], seed: 2).to(.float32)
        let float32 = noGrad { user(x) }
        expectClose(float32, noGrad { builtIn(x) }, rtol: 1e-5, atol: 1e-6, "float32")
        let (u, b) = autocast(.bfloat16) { () -> (Tensor, Tensor) in
            let (u, b) = (user(x), builtIn(x))
            (u * r).sum().backward()
            (b * r).sum().backward()
            return (u, b)
        }
        expectClose(u, b, rtol: 1e-5, atol: 1e-6, "bf16 outputs")
        #expect(closeness(u, float32, rtol: 1e-5, atol: 1e-5).ok == false, "autocast changed nothing")
        let builtInGrads = builtIn.parameters().map { $0.grad! }
        for (i, p) in user.parameters().enumerated() {
            expectClose(
                p.grad!, i == 4 ? builtInGrads[4].transpose(0, 1) : builtInGrads[i], rtol: 1e-4, atol: 1e-5,
                "gradient \(i)")
        }
    }

    @Test func userOpsTrainUnderTheMixedPrecisionCallbackAsBuiltInLayersDo() throws {
        let x = randn([32, 2, 6, 6], seed: 3).to(.float32), y = randn([32, 3], seed: 4).to(.float32)
        func fit(_ model: Module) throws -> Learner {
            let dls = DataLoaders(train: DataLoader(x, y, batchSize: 8), valid: DataLoader(x, y, batchSize: 32))
            let learn = Learner(
                model: model, dls: dls, lossFunc: MSELoss(), lr: 0.1, progress: false,
                optFunc: { SGD($0.parameters(), lr: $1) })
            learn.toBF16 { _ in }
            try learn.fit(1)
            return learn
        }
        let builtIn = builtInNet(), user = OpsNet(copying: builtIn), float32 = OpsNet(copying: builtIn)
        let learn = try fit(builtIn)
        _ = try fit(user)
        for (i, (u, b)) in zip(weights(user), weights(builtIn)).enumerated() {
            expectClose(u, b, rtol: 1e-4, atol: 1e-5, "weight \(i) after a bf16 epoch")
        }
        guard learn.callback(MixedPrecision.self)?.unavailable == nil else { return }
        let plain = Learner(
            model: float32, dls: learn.dls, lossFunc: MSELoss(), lr: 0.1, progress: false,
            optFunc: { SGD($0.parameters(), lr: $1) })
        try plain.fit(1)
        #expect(!closeness(weights(user)[0], weights(float32)[0], rtol: 1e-6, atol: 1e-7).ok, "bf16 = float32")
    }
}
