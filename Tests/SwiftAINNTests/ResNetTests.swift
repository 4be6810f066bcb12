import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

/// `Tests/SwiftAINNTests/Fixtures/tv_basic.safetensors` (written by `scripts/make_resnet_fixtures.py`).
private func resnetFixture() throws -> (tensors: [String: Tensor], metadata: [String: String]) {
    try Safetensors.read(path: committedFixture("SwiftAINNTests", "tv_basic.safetensors"))
}

private func json<T>(_ s: String?, as: T.Type) throws -> T {
    let text = try #require(s)
    return try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? T)
}

/// The entries of `prefix.*` with the prefix removed.
private func stripped(_ tensors: [String: Tensor], _ prefix: String) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for (k, v) in tensors where k.hasPrefix(prefix) { out[String(k.dropFirst(prefix.count))] = v }
    return out
}

/// The script's `formula_state`: entry j of the sorted keys, element i, is a 32-bit hash of (i, j) mapped to [-1, 1),
/// scaled by the kind of entry.
private func formulaState(_ model: Module) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for (j, (k, t)) in model.stateDict().sorted(by: { $0.key < $1.key }).enumerated() {
        if k.hasSuffix("num_batches_tracked") { out[k] = t; continue }
        let m: UInt64 = 0xFFFF_FFFF
        var v = (0..<t.count).map { i -> Double in
            var h = (UInt64(i) &* 0x9E37_79B1 &+ UInt64(j) &* 0x85EB_CA77) & m
            h ^= h >> 15; h = (h &* 0x2C1B_3C6D) & m
            h ^= h >> 12; h = (h &* 0x297A_2D39) & m
            h ^= h >> 15
            return Double(h) / 2_147_483_648 - 1
        }
        if t.rank >= 2 {
            let scale = (3 / Double(t.count / t.shape[0])).squareRoot()
            v = v.map { $0 * scale }
        } else if k.hasSuffix("running_var") || (k.hasSuffix("weight") && !k.hasPrefix("fc")) {
            v = v.map { 1 + 0.5 * $0 }
        } else {
            v = v.map { 0.1 * $0 }
        }
        out[k] = Tensor(v, shape: t.shape).to(.float32)
    }
    return out
}

@Suite struct ResNetTests {
    @Test func parameterCountsMatchTorchvision() throws {
        let expected: [ResNetArch: Int] = [
            .resnet18: 11_689_512, .resnet34: 21_797_672, .resnet50: 25_557_032,
            .resnet101: 44_549_160, .resnet152: 60_192_808
        ]
        let counts = try json(try resnetFixture().metadata["parameter_counts"], as: [String: Int].self)
        let shared = try loadFixture("tv_resnets").map {
            try json($0.metadata["torchvision_parameter_counts"], as: [String: Int].self)
        }
        let generator = Generator(seed: 0)  // not the shared default, whose lock would serialise the other tests
        for arch in ResNetArch.allCases {
            let n = arch.make(generator: generator).parameterCount
            #expect(n == expected[arch], "\(arch)")
            #expect(n == counts[arch.rawValue], "\(arch)")
            if let shared { #expect(n == shared[arch.rawValue], "\(arch)") }
        }
        let resnext = ResNet(
            block: .bottleneck, layers: [3, 4, 6, 3], groups: 32, widthPerGroup: 4, generator: generator)
        #expect(resnext.parameterCount == counts["resnext50_32x4d"])
        #expect(ResNetArch(rawValue: "resnet34") == .resnet34)
    }

    @Test func namesShapesAndOrderMatchTorchvision() throws {
        let meta = try resnetFixture().metadata
        for (arch, model) in [("resnet18", ResNet.resnet18()), ("resnet50", ResNet.resnet50())] {
            let params = try json(meta["\(arch).parameters"], as: [[Any]].self)
            let buffers = try json(meta["\(arch).buffers"], as: [[Any]].self)
            #expect(model.namedParameters().map(\.0) == params.map { $0[0] as! String }, "\(arch) parameters")
            #expect(
                model.namedParameters().map(\.1.shape) == params.map { $0[1] as! [Int] }, "\(arch) parameter shapes")
            #expect(model.namedBuffers().map(\.0) == buffers.map { $0[0] as! String }, "\(arch) buffers")
            #expect(
                model.namedBuffers().map(\.1.value.shape) == buffers.map { $0[1] as! [Int] }, "\(arch) buffer shapes")
            #expect(model.stateDict()["bn1.num_batches_tracked"]?.dtype == .int64)
        }
    }

    @Test func bottleneckNetMatchesTorchvision() throws {
        guard let f = try loadFixture("tv_resnets") else { return }
        let model = ResNet(block: .bottleneck, layers: [1, 1, 1, 1], numClasses: 10, widthPerGroup: 16)
        try model.load(stateDict: stripped(f.tensors, "tv_bottleneck_1111.param."))
        model.eval()
        let out = noGrad { model(f.tensors["tv_bottleneck_1111.input"]!) }
        expectClose(out, f.tensors["tv_bottleneck_1111.output"]!, rtol: 0, atol: 1e-4, "tv_bottleneck_1111 output")
    }

    @Test func basicNetLoadsTorchSaveFile() throws {
        guard let f = try loadFixture("tv_resnets"), let dir = fixturesDirectory else { return }
        let model = ResNet(block: .basic, layers: [1, 1, 1, 1], numClasses: 10)
        try model.load(stateDict: PyTorchWeights.read(path: dir + "/tv_basic_1111.pth"))
        model.eval()
        let out = noGrad { model(f.tensors["tv_basic_1111.input"]!) }
        expectClose(out, f.tensors["tv_basic_1111.output"]!, rtol: 0, atol: 1e-4, "tv_basic_1111 output")
    }

    @Test func basicNetMatchesTorchvision() throws {
        let f = try resnetFixture()
        let model = ResNet(block: .basic, layers: [1, 1, 1, 1], numClasses: 10)
        try model.load(stateDict: formulaState(model))
        model.eval()
        let out = noGrad { model(f.tensors["basic_net.input"]!) }
        expectClose(out, f.tensors["basic_net.output"]!, rtol: 0, atol: 1e-4, "basic_net output")
    }

    @Test func blocksMatchTorchvisionInEvalAndTraining() throws {
        let f = try resnetFixture()
        func downsample(_ i: Int, _ o: Int) -> Sequential {
            Sequential(Conv2d(i, o, kernelSize: 1, stride: 2, bias: false), BatchNorm2d(o))
        }
        let blocks: [(String, Module)] = [
            ("basic_block", BasicBlock(inPlanes: 8, planes: 16, stride: 2, downsample: downsample(8, 16))),
            (
                "bottleneck_block",
                Bottleneck(inPlanes: 16, planes: 8, stride: 2, downsample: downsample(16, 32), groups: 2, baseWidth: 40)
            )
        ]
        for (name, block) in blocks {
            let t = stripped(f.tensors, name + ".")
            try block.load(stateDict: stripped(t, "param."))
            block.eval()
            expectClose(noGrad { block(t["input"]!) }, t["eval_output"]!, rtol: 0, atol: 1e-5, "\(name) eval output")
            block.train()
            let x = t["input"]!.requiringGrad()
            let out = block(x)
            expectClose(out, t["train_output"]!, rtol: 0, atol: 1e-5, "\(name) train output")
            (out * t["upstream"]!).sum().backward()
            expectClose(try #require(x.grad), t["grad_input"]!, rtol: 1e-4, atol: 1e-4, "\(name) grad_input")
            for (k, p) in block.namedParameters() {
                expectClose(
                    try #require(p.grad, "\(name).\(k)"), t["grad." + k]!, rtol: 1e-4, atol: 1e-4, "\(name) grad.\(k)")
            }
            for (k, b) in block.namedBuffers() {
                expectClose(
                    b.value.to(.float64), t["after." + k]!.to(.float64), rtol: 1e-5, atol: 1e-6, "\(name) after.\(k)")
            }
        }
    }

    @Test func trainingStepReachesEveryParameter() throws {
        let model = ResNet(
            block: .bottleneck, layers: [1, 1, 1, 1], numClasses: 5, widthPerGroup: 16, generator: Generator(seed: 1))
        let x = Tensor.randn([2, 3, 32, 32], generator: Generator(seed: 2))
        let loss = crossEntropy(model(x), Tensor([Int64(0), 3]))
        #expect(loss.item().isFinite)
        loss.backward()
        for (k, p) in model.namedParameters() {
            let g = try #require(p.grad, "\(k) has no gradient")
            #expect(g.shape == p.shape && g.doubles.allSatisfy(\.isFinite), "\(k)")
        }
        #expect(model.stateDict()["layer4.0.downsample.1.num_batches_tracked"]!.item() == 1)
    }

    @Test func bodyIsFastaiCreateBody() {
        let model = ResNet.resnet18(numClasses: 7)
        let body = model.body
        #expect(body.count == 8 && body[4] === model.layer1 && body[0] === model.conv1)
        #expect(
            body.namedParameters().contains {
                $0.0 == "4.0.conv1.weight" && $0.1 === model.layer1.namedParameters()[0].1
            })
        #expect(model.numFeatures == 512 && ResNet.resnet50().numFeatures == 2048)
        let x = Tensor.randn([1, 3, 64, 64])
        model.eval()
        let (feats, logits, fromBody) = noGrad { (model.features(x), model(x), body(x)) }
        #expect(feats.shape == [1, 512, 2, 2] && logits.shape == [1, 7])
        #expect(fromBody.floats == feats.floats)
    }

    @Test func initialisationIsTorchvisions() {
        let model = ResNet(
            block: .bottleneck, layers: [1, 1, 1, 1], numClasses: 10, zeroInitResidual: true,
            generator: Generator(seed: 4))
        // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (out · k · k)).
        let w = model.layer1[0].namedParameters().first { $0.0 == "conv2.weight" }!.1.value
        #expect(Swift.abs(w.std().item() / (2.0 / (64 * 9)).squareRoot() - 1) < 0.05)
        for case let b as Bottleneck in model.modules() {
            #expect(
                b.bn3.weight!.value.doubles.allSatisfy { $0 == 0 } && b.bn2.weight!.value.doubles.allSatisfy { $0 == 1 }
            )
        }
        let basic = ResNet(block: .basic, layers: [1, 1, 1, 1], zeroInitResidual: true)
        for case let b as BasicBlock in basic.modules() { #expect(b.bn2.weight!.value.doubles.allSatisfy { $0 == 0 }) }
        // nn.Linear's default: U(±1/sqrt(in_features)).
        #expect(model.fc.weight.value.abs().max().item() <= 1 / 2048.0.squareRoot())
    }
}

/// One training step (forward, cross-entropy, backward) of resnet18 and resnet34
/// (`SWIFTAI_RESNET_TIMING=1 swift test -c release --filter ResNetTiming`).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SWIFTAI_RESNET_TIMING"] != nil))
struct ResNetTiming {
    @Test func trainingStep() {
        for (arch, size, bs) in [(ResNetArch.resnet18, 128, 16), (.resnet34, 224, 8)] {
            let model = arch.make(numClasses: 10)
            let x = Tensor.randn([bs, 3, size, size]), y = Tensor((0..<bs).map { Int64($0 % 10) })
            var times: [Double] = []
            for _ in 0..<4 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                crossEntropy(model(x), y).backward()
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                for p in model.parameters() { p.grad = nil }
            }
            let ms = times.map { String(format: "%.0f", $0) }
            print(
                """
                \(arch.rawValue) \(size) px bs \(bs): forward+backward first \(ms[0]) ms, then \
                \(ms.dropFirst().joined(separator: ", ")) ms
                """
            )
        }
    }
}
