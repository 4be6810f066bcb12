import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

/// `Fixtures/quant.safetensors`: PyTorch 2.9 x86 values (written by `scripts/make_quant_fixtures.py`).
private func quantFixture() throws -> [String: Tensor] {
    try Safetensors.read(path: committedFixture("SwiftAINNTests", "quant.safetensors")).tensors
}

/// Largest difference between two uint8/int8 code tensors.
private func maxCodeDifference(_ a: Tensor, _ b: Tensor) -> Double {
    zip(a.contiguous().doubles, b.contiguous().doubles).map { abs($0 - $1) }.max() ?? 0
}

/// Cosine similarity of two tensors' values: int8 logits keep their direction.
private func cosine(_ a: Tensor, _ b: Tensor) -> Double {
    (a * b).sum().item() / ((a * a).sum().item().squareRoot() * (b * b).sum().item().squareRoot())
}

@Suite struct QuantizationTests {
    @Test func minMaxParametersAndPerChannelWeightsEqualPyTorchs() throws {
        let f = try quantFixture()
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<3 {
            let v = f["act_\(i)"]!.floats
            lo = min(lo, v.min()!)
            hi = max(hi, v.max()!)
        }
        let q = QParams(min: lo, max: hi, qmax: 127)
        #expect(abs(q.scale - f["minmax_scale"]!.floats[0]) <= 1e-7 * q.scale)
        #expect(Double(q.zeroPoint) == f["minmax_zero_point"]!.doubles[0])
        let (w, s) = Quantization.quantizePerChannel(f["weight"]!)
        expectClose(s, f["weight_scale"]!, rtol: 1e-6, atol: 0, "per-channel scales")
        #expect(maxCodeDifference(w, f["weight_int"]!) == 0)
    }

    @Test func int8ConvMatchesFbgemmConvReLU() throws {
        let f = try quantFixture()
        let x = QParams(
            scale: f["minmax_scale"]!.floats[0], zeroPoint: Int32(f["minmax_zero_point"]!.doubles[0]), qmax: 127)!
        let conv = Int8Conv(
            weight: f["weight_int"]!, weightScales: f["weight_scale"]!, bias: f["bias"]!, stride: 2, padding: 1,
            input: x, output: QParams(scale: 0.02, zeroPoint: 0, qmax: 255)!, epilogue: [.leakyRelu(0)])
        let y = conv(f["x_int"]!.contiguous(.channelsLast))
        // fbgemm and oneDNN round the same real values; a code may differ by one where a value sits on a rounding edge.
        #expect(maxCodeDifference(y, f["conv_relu_int"]!) <= 1)
        let exact = zip(y.contiguous().doubles, f["conv_relu_int"]!.doubles).filter { $0 == $1 }.count
        #expect(Double(exact) >= 0.98 * Double(y.count))
    }

    @Test func int8ConvWithResidualAndLeakyEpilogueMatchesFloatOnCodes() {
        let xf = randn([2, 8, 9, 9], seed: 1).to(.float32) * 0.5 + 0.2
        let rf = randn([2, 16, 5, 5], seed: 2).to(.float32)
        let wf = randn([16, 8, 3, 3], seed: 3).to(.float32) * 0.1
        let b = randn([16], seed: 4).to(.float32) * 0.1
        let xq = QParams(min: -1.5, max: 2.0, qmax: 127), rq = QParams(min: -3, max: 3, qmax: 127),
            oq = QParams(min: -1, max: 4, qmax: 127)
        let (w, s) = Quantization.quantizePerChannel(wf)
        let epilogue: [ConvEpilogue] = [.addResidual, .leakyRelu(0.1), .add(-0.4), .clampMax(3)]
        let conv = Int8Conv(
            weight: w, weightScales: s, bias: b, stride: 2, padding: 1, input: xq, output: oq, residual: rq,
            epilogue: epilogue)
        let (x, r) = (xf.quantized(xq), rf.quantized(rq))
        let got = conv(x, residual: r)
        // The float computation on the values the codes stand for.
        let wd = w.to(.float32) * s.reshape([16, 1, 1, 1])
        var want = x.dequantized(xq).conv2d(weight: wd, bias: b, stride: 2, padding: 1) + r.dequantized(rq)
        want = (want.leakyRelu(0.1) - 0.4).clamp(max: 3)
        #expect(maxCodeDifference(got, want.quantized(oq)) <= 1)
        #expect(conv.implementation(forInput: x.shape).contains("int8"))
    }

    @Test func int8LinearStaticAndDynamicMatchFloat() {
        let x = randn([5, 24], seed: 5).to(.float32)
        let wf = randn([7, 24], seed: 6).to(.float32) * 0.3, b = randn([7], seed: 7).to(.float32)
        let (w, s) = Quantization.quantizePerChannel(wf)
        let want = x.matmul((w.to(.float32) * s.reshape([7, 1])).transpose(0, 1)) + b
        for input in [nil, QParams(min: -3, max: 3, qmax: 127)] {
            let lin = Int8Linear(weight: w, weightScales: s, bias: b, input: input)
            let qp = input ?? QParams(min: x.min().floats[0], max: x.max().floats[0], qmax: Quantization.activationQMax)
            // Exact up to float rounding on the quantized input.
            let exact = x.quantized(qp).dequantized(qp).matmul((w.to(.float32) * s.reshape([7, 1])).transpose(0, 1)) + b
            expectClose(lin(x), exact, rtol: 1e-4, atol: 1e-4, "int8 linear \(input == nil ? "dynamic" : "static")")
            expectClose(lin(x), want, rtol: 0.05, atol: 0.1, "close to float")
        }
    }

    @Test func quantizedPoolsMatchFloatPoolsOfTheValues() {
        let q = QParams(min: -1, max: 3, qmax: 127)
        let x = (randn([2, 5, 7, 7], seed: 8).to(.float32)).quantized(q)
        let xf = x.dequantized(q)
        #expect(
            maxCodeDifference(
                x.quantizedMaxPool2d(kernel: 3, stride: 2, padding: 1),
                xf.maxPool2d(kernel: 3, stride: 2, padding: 1).quantized(q)) == 0)
        #expect(
            maxCodeDifference(
                x.quantizedAvgPool2d(kernel: 2, ceilMode: true, zeroPoint: q.zeroPoint),
                xf.avgPool2d(kernel: 2, ceilMode: true).quantized(q)) <= 1)
    }

    @Test(arguments: [(2, 0), (3, 1)])
    func quantizedAveragePoolRoundsTheMeanOfCodesHalfToEven(kernel: Int, padding: Int) {
        // Padding counts as the code `zeroPoint` (the real value 0); means are rounded half to even, as
        // PyTorch's quantized avg_pool2d. Kernel 2 makes ties (sums ≡ 2 mod 4) common.
        let zp: Int32 = 9, (h, w) = (6, 5)
        let x = (randn([2, 3, h, w], seed: 4) * 60 + 100).clamp(min: 0, max: 255).to(.uint8).contiguous(.channelsLast)
        let got = x.quantizedAvgPool2d(kernel: kernel, stride: 2, padding: padding, zeroPoint: zp)
        let (oh, ow) = ((h + 2 * padding - kernel) / 2 + 1, (w + 2 * padding - kernel) / 2 + 1)
        #expect(got.shape == [2, 3, oh, ow])
        var mismatches = 0, ties = 0
        for b in 0..<2 {
            for ch in 0..<3 {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var sum: Float = 0
                        for di in 0..<kernel {
                            for dj in 0..<kernel {
                                let (r, c) = (2 * i - padding + di, 2 * j - padding + dj)
                                sum +=
                                    (0..<h).contains(r) && (0..<w).contains(c)
                                    ? Float(x[element: [b, ch, r, c]]) : Float(zp)
                            }
                        }
                        let mean = sum / Float(kernel * kernel)
                        if mean - mean.rounded(.down) == 0.5 { ties += 1 }
                        if Float(got[element: [b, ch, i, j]]) != mean.rounded(.toNearestOrEven) { mismatches += 1 }
                    }
                }
            }
        }
        #expect(mismatches == 0)
        #expect(kernel != 2 || ties > 0, "the data should contain ties")
    }

    @Test func histogramObserverClipsAHeavyTailWhereItLowersTheError() throws {
        let model = Sequential(Conv2d(1, 4, kernelSize: 1, generator: Generator(seed: 1)))
        let n = randn([64, 1, 16, 16], seed: 9).to(.float32)
        let x = n * n * n  // heavy tails: a few values near ±60, most within ±3
        let mm = try model.quantizedStatic(observer: .minMax) { $0(x) }
        let hist = try model.quantizedStatic(observer: .histogram) { $0(x) }
        let inMM = mm.body.modules().compactMap { $0 as? Quantize }.first!.params
        let inH = hist.body.modules().compactMap { $0 as? Quantize }.first!.params
        #expect(
            Double(inMM.range.lowerBound) <= x.min().item() + Double(inMM.scale)
                && Double(inMM.range.upperBound) >= x.max().item() - Double(inMM.scale))
        #expect(inH.range.lowerBound > inMM.range.lowerBound && inH.range.upperBound < inMM.range.upperBound)
        func mse(_ q: QParams) -> Double {
            ((x.quantized(q).dequantized(q) - x) * (x.quantized(q).dequantized(q) - x)).mean().item()
        }
        #expect(mse(inH) < mse(inMM))
    }

    @Test func staticQuantizationOfLessonModelsTracksFloatAndRoundTripsItsState() throws {
        for kind in FashionMNISTModel.allCases {
            let model = kind.make(generator: Generator(seed: 3))
            randomiseBatchNorms(model, seed: 11)
            model.eval()
            let calib = (0..<3).map { randn([16, 1, 28, 28], seed: 20 + UInt64($0)).to(.float32) }
            let q = try model.quantizedStatic(observer: .minMax) { body in calib.forEach(body) }
            let x = randn([8, 1, 28, 28], seed: 30).to(.float32)
            let (want, got) = noGrad { (model(x), q(x)) }
            // Cosine similarity of the logits: int8 keeps their direction.
            #expect(cosine(want, got) > 0.98, "\(kind): cosine \(cosine(want, got))")
            #expect(
                q.report.quantized.count == model.modules().filter { $0 is Conv2d }.count
                    + model.modules().filter { $0 is Linear }.count)
            // The quantized state rebuilds the same model on a fresh architecture.
            let state = q.quantizedState()
            let reloaded = try QuantizedModel.load(
                state, architecture: kind.make(generator: Generator(seed: 99)),
                scheme: .static, qmax: q.qmax)
            #expect(maxCodeDifference(noGrad { reloaded(x) }, got) == 0, "\(kind) reloaded")
        }
    }

    /// Top-1 agreement of two models' logits.
    func agreement(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.argmax(dim: 1).scalars(as: Int64.self), y = b.argmax(dim: 1).scalars(as: Int64.self)
        return Double(zip(x, y).filter { $0 == $1 }.count) / Double(x.count)
    }

    /// 8-bit states (VNNI hosts) load where u8·s8 products saturate beyond 7 bits: those layers compute in float32 on
    /// the dequantized codes and give the 8-bit model's predictions; 7-bit states load unchanged everywhere. Both
    /// directions run on any host: the kernels' width is a parameter here.
    @Test func int8StatesArePortableBetweenSevenAndEightBitHosts() throws {
        let model = FashionMNISTModel.resnet.make(generator: Generator(seed: 3))
        randomiseBatchNorms(model, seed: 11)
        model.eval()
        let calib = (0..<4).map { randn([32, 1, 28, 28], seed: 40 + UInt64($0)).to(.float32) }
        let q8 = try model.quantizedStatic(observer: .minMax, qmax: 255) { body in calib.forEach(body) }
        let q7 = try model.quantizedStatic(observer: .minMax, qmax: 127) { body in calib.forEach(body) }
        let x = randn([256, 1, 28, 28], seed: 50).to(.float32)
        let want = noGrad { model(x) }
        // An 8-bit state on a 7-bit host: the same codes, each int8 layer computed in float32.
        let ported = try QuantizedModel.load(
            q8.quantizedState(), architecture: FashionMNISTModel.resnet.make(),
            scheme: .static, qmax: 255, kernelQMax: 127)
        let convs = ported.body.modules().compactMap { $0 as? QuantizedConv2d }
        #expect(ported.qmax == 255 && !convs.isEmpty && convs.allSatisfy { $0.conv.runsInFloat })
        let onPorted = noGrad { ported(x) }
        #expect(cosine(onPorted, want) > 0.98)
        if Quantization.hasVNNI {  // the 8-bit kernels themselves run only where products do not saturate
            let native = try QuantizedModel.load(
                q8.quantizedState(), architecture: FashionMNISTModel.resnet.make(),
                scheme: .static, qmax: 255, kernelQMax: 255)
            let on8 = noGrad { native(x) }
            #expect(native.body.modules().compactMap { $0 as? QuantizedConv2d }.allSatisfy { !$0.conv.runsInFloat })
            #expect(
                agreement(onPorted, on8) >= 0.995 && cosine(onPorted, on8) > 0.9999,
                "\(agreement(onPorted, on8)) \(cosine(onPorted, on8))")
        }
        let on7 = noGrad { q7(x) }
        // A 7-bit state on an 8-bit host: the same codes.
        let wide = try QuantizedModel.load(
            q7.quantizedState(), architecture: FashionMNISTModel.resnet.make(),
            scheme: .static, qmax: 127, kernelQMax: 255)
        #expect(wide.qmax == 127 && maxCodeDifference(noGrad { wide(x) }, on7) == 0)
        // A state whose codes disagree with its recorded width (an 8-bit zero point in a 7-bit state) is refused.
        var bad = q8.quantizedState()
        let key = bad.keys.first { $0.hasSuffix(".zero_point") }!
        bad[key] = Tensor([Int64(200)], shape: [1])
        #expect(throws: QuantizationError.self) {
            try QuantizedModel.load(
                bad, architecture: FashionMNISTModel.resnet.make(), scheme: .static, qmax: 127,
                kernelQMax: 127)
        }
    }

    @Test func corruptQuantizedStateIsRefused() throws {
        let model = FashionMNISTModel.cnn.make(generator: Generator(seed: 4))
        model.eval()
        let q = try model.quantizedStatic(observer: .minMax) { $0(randn([4, 1, 28, 28], seed: 1).to(.float32)) }
        let state = q.quantizedState()
        let key = state.keys.first { $0.hasSuffix(".scale") }!
        for (bad, what) in [
            (Tensor([Float(0)], shape: [1]), "zero scale"), (Tensor([Float.nan], shape: [1]), "NaN scale")
        ] {
            var s = state
            s[key] = bad
            #expect(throws: QuantizationError.self, "\(what)") {
                try QuantizedModel.load(s, architecture: FashionMNISTModel.cnn.make(), scheme: .static, qmax: 127)
            }
        }
        var s = state
        s[key.replacingOccurrences(of: ".scale", with: ".zero_point")] = Tensor([Int64(300)], shape: [1])
        #expect(throws: QuantizationError.self) {
            try QuantizedModel.load(s, architecture: FashionMNISTModel.cnn.make(), scheme: .static, qmax: 127)
        }
        s = state
        s["extra.weight"] = Tensor([Float(1)], shape: [1])
        #expect(throws: QuantizationError.self) {
            try QuantizedModel.load(s, architecture: FashionMNISTModel.cnn.make(), scheme: .static, qmax: 127)
        }
    }

    @Test func nonFiniteWeightsAreATypedErrorNotATrap() throws {
        let model = FashionMNISTModel.cnn.make(generator: Generator(seed: 6))
        model.eval()
        let bn = model.modules().compactMap { $0 as? BatchNorm2d }[1]
        // √(var + ε) is NaN: so are the folded weights
        bn.runningVar!.value = Tensor.full([bn.runningVar!.value.count], -2)
        #expect(throws: QuantizationError.self) {
            try model.quantizedStatic(observer: .minMax) { $0(randn([2, 1, 28, 28], seed: 1).to(.float32)) }
        }
        let w = Tensor([Float.nan, 1, -Float.infinity, 0.5], shape: [2, 2])
        let (q, s) = Quantization.quantizePerChannel(w)
        #expect(q.doubles == [0, 127, -128, 127] && s.floats.allSatisfy(\.isFinite))
    }

    @Test func dynamicQuantizationCoversLinearLayersOnly() throws {
        let model = FashionMNISTModel.resnet.make(generator: Generator(seed: 5))
        randomiseBatchNorms(model, seed: 2)
        model.eval()
        let q = try model.quantizedDynamic()
        #expect(q.report.quantized == ["7"])
        #expect(q.report.float.contains { $0.name == "8" })  // the BatchNorm1d after it
        let x = randn([4, 1, 28, 28], seed: 3).to(.float32)
        let (want, got) = noGrad { (model(x), q(x)) }
        #expect(cosine(want, got) > 0.995)
    }
}

@Suite struct QuantizationAwareTrainingTests {
    @Test func qatSimulatesTheInt8ModelItConvertsTo() throws {
        let model = FashionMNISTModel.resnet.make(generator: Generator(seed: 8))
        randomiseBatchNorms(model, seed: 5)
        let qat = model.prepareQAT(qmax: 127)
        model.train()
        for i in 0..<3 { _ = model(randn([16, 1, 28, 28], seed: 40 + UInt64(i)).to(.float32)) }
        // Gradients pass the rounding (straight through).
        let x = randn([4, 1, 28, 28], seed: 50).to(.float32)
        model(x).sum().backward()
        #expect(model.parameters().allSatisfy { $0.grad != nil })
        model.eval()
        let simulated = noGrad { model(x) }
        let q = try qat.convert()
        let (float, int8) = noGrad { (model(x), q(x)) }
        // The simulation is far closer to the int8 model than the float model is (the input itself is not rounded).
        let dSim = ((simulated - int8) * (simulated - int8)).mean().item(),
            dFloat = ((float - int8) * (float - int8)).mean().item()
        #expect(dSim < 0.2 * dFloat, "simulation \(dSim) vs float \(dFloat)")
        #expect(!model.modules().contains { $0 is QATConv2d || $0 is QATLinear })
        #expect(model.modules().allSatisfy { $0.forwardHookCount == 0 })
    }

    @Test func qatSwapsTheLayersOfUserModulesSharingTheirParameters() throws {
        func layers() -> (Conv2d, Linear) {
            let g = Generator(seed: 21)
            return (Conv2d(2, 4, kernelSize: 3, padding: 1, generator: g), Linear(4 * 6 * 6, 3, generator: g))
        }
        let user = UserNet(layers()), (conv, head) = layers()
        let builtIn = Sequential(conv, ReLU(), Flatten(), head)
        let model = Sequential(user)
        let x = randn([5, 2, 6, 6], seed: 22).to(.float32)
        let (names, params, float) = (model.namedParameters().map(\.0), model.parameters(), noGrad { model(x) })
        let qat = model.prepareQAT(qmax: 127)
        let simulated = builtIn.prepareQAT(qmax: 127)
        #expect(model.modules().contains { $0 is QATConv2d } && model.modules().contains { $0 is QATLinear })
        #expect(model.modules().allSatisfy { !($0 is Conv2d || $0 is Linear) })
        // The same parameter objects under PyTorch's names: optimizers, state dicts and saved weights are unchanged.
        #expect(model.namedParameters().map(\.0) == names && zip(model.parameters(), params).allSatisfy { $0 === $1 })
        #expect(Set(model.stateDict().keys) == Set(names))
        let resnet = FashionMNISTModel.resnet.make(generator: Generator(seed: 23)), state = Set(resnet.stateDict().keys)
        _ = resnet.prepareQAT()
        #expect(Set(resnet.stateDict().keys) == state)  // PyTorch's names (ModuleTests)
        // Weights rounded per channel as in the built-in model (evaluation mode: no activation range seen yet).
        model.eval()
        builtIn.eval()
        let y = noGrad { model(x) }
        let want = x.conv2d(
            weight: user.conv.weight.value.fakeQuantizedPerChannel(), bias: user.conv.bias!.value,
            padding: 1
        ).relu().flatten(startDim: 1)
            .linear(weight: user.head.weight.value.fakeQuantizedPerChannel(), bias: user.head.bias!.value)
        expectClose(y, noGrad { builtIn(x) }, rtol: 0, atol: 0, "user module vs built-in")
        expectClose(y, want, rtol: 1e-6, atol: 1e-6, "fake-quantized weights")
        #expect(!closeness(y, float, rtol: 1e-6, atol: 1e-6).ok)
        model.train()
        model(x).sum().backward()
        #expect(user.conv.weight.grad != nil && user.head.weight.grad != nil)  // straight through
        _ = try qat.convert()
        // The built-in model saw no activation in training mode: its conversion fails and it stays prepared.
        #expect(throws: QuantizationError.self) { try simulated.convert() }
        #expect(builtIn.modules().contains { $0 is QATConv2d } && builtIn.modules().contains { $0 is QATLinear })
        #expect(model.modules().contains { $0 === user.conv } && !model.modules().contains { $0 is QATLinear })
        model.eval()
        expectClose(noGrad { model(x) }, float, rtol: 0, atol: 0, "float again")
    }

    @Test func fakeQuantizationRoundsAndPassesGradientsInsideTheRange() {
        let q = QParams(min: -1, max: 1, qmax: 255)
        let x = Tensor([Float(-2), -0.5, 0.1234, 0.9, 3], shape: [5]).requiringGrad()
        let y = x.fakeQuantized(q)
        expectClose(y, x.detached().quantized(q).dequantized(q), rtol: 0, atol: 0, "fake = dequantize(quantize)")
        y.sum().backward()
        #expect(x.grad!.floats == [0, 1, 1, 1, 0])
    }
}

/// A user-written module holding built-in layers in its own properties.
private final class UserNet: Module {
    let conv: Conv2d
    let head: Linear

    init(_ layers: (Conv2d, Linear)) {
        (conv, head) = layers
        super.init()
    }

    override func forward(_ x: Tensor) -> Tensor { head(conv(x).relu().flatten(startDim: 1)) }
}
