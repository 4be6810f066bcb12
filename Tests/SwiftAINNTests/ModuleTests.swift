import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

func fashionResNet(generator: Generator = .default) -> Sequential {
    FashionMNISTModel.resnet.make(generator: generator)
}

@Suite struct ModuleTests {
    @Test func namesMatchPyTorchStateDict() throws {
        let model = fashionResNet()
        let names = model.namedParameters().map(\.0)
        #expect(names.first == "0.convs.0.0.weight")
        #expect(names.contains("0.idconv.1.bias") && names.contains("7.weight") && names.contains("8.bias"))
        #expect(!names.contains { $0.contains("1.idconv") && $0.hasSuffix("bias") && $0.contains(".0.bias") })
        let buffers = model.namedBuffers().map(\.0)
        #expect(buffers.contains("0.convs.0.1.running_mean") && buffers.contains("8.num_batches_tracked"))
        // PyTorch: sum(p.numel() for p in get_model(kind).parameters())
        #expect(model.parameterCount == 1_228_404)
        #expect(FashionMNISTModel.cnn.make().parameterCount == 30_274)
        #expect(FashionMNISTModel.wide.make().parameterCount == 1_224_452)
        #expect(FashionMNISTModel.wide.make()(Tensor.randn([2, 1, 28, 28])).shape == [2, 10])
        #expect(FashionMNISTModel.cnn.make()(Tensor.randn([2, 1, 28, 28])).shape == [2, 10])
        if let f = try loadFixture("fmnist_resnet") {
            let order = try JSONSerialization.jsonObject(with: Data(f.metadata["parameter_order"]!.utf8)) as! [String]
            #expect(names == order)
            let fixtureState = Set(f.tensors.keys.filter { $0.hasPrefix("param.") }.map { String($0.dropFirst(6)) })
            let ours = Set(model.stateDict().keys.filter { !$0.hasSuffix("num_batches_tracked") })
            #expect(fixtureState == ours)
        }
    }

    @Test func fixtureModelMatchesPyTorchStep() throws {
        guard let f = try loadFixture("fmnist_resnet") else { return }
        let model = fashionResNet()
        var sd: [String: Tensor] = [:]
        for (k, v) in f.tensors where k.hasPrefix("param.") { sd[String(k.dropFirst(6))] = v }
        for (k, v) in model.stateDict() where k.hasSuffix("num_batches_tracked") { sd[k] = v }
        try model.load(stateDict: sd)
        model.train()
        let out = model(f.tensors["input"]!)
        expectClose(out, f.tensors["output"]!, "output")
        let loss = CrossEntropyLoss()(out, f.tensors["target"]!)
        expectClose(loss.reshape([1]), f.tensors["loss"]!, "loss")
        loss.backward()
        for (name, p) in model.namedParameters() {
            expectClose(p.grad!, f.tensors["grad." + name]!, rtol: 1e-4, atol: 2e-5, "grad.\(name)")
        }
        for (name, b) in model.namedBuffers() where !name.hasSuffix("num_batches_tracked") {
            expectClose(b.value, f.tensors["after." + name]!, "after.\(name)")
        }
        #expect(model.stateDict()["0.convs.0.1.num_batches_tracked"]!.item() == 1)
    }

    @Test func stateDictRoundTripsThroughSafetensors() throws {
        let a = fashionResNet(generator: Generator(seed: 1)), b = fashionResNet(generator: Generator(seed: 2))
        a.train()
        _ = a(Tensor.randn([4, 1, 28, 28]))  // moves running statistics
        let path = NSTemporaryDirectory() + "swiftai-nn-\(getpid()).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try a.save(to: path, metadata: ["arch": "fmnist-resnet"])
        let meta = try b.load(from: path)
        #expect(meta["arch"] == "fmnist-resnet")
        let sa = a.stateDict(), sb = b.stateDict()
        #expect(Set(sa.keys) == Set(sb.keys))
        for (k, v) in sa { #expect(v.doubles == sb[k]!.doubles, "\(k)") }
        a.eval(); b.eval()
        let x = Tensor.randn([3, 1, 28, 28])
        #expect(a(x).floats == b(x).floats)
    }

    @Test func failedStrictLoadsLeaveWeightsUntouched() throws {
        let model = fashionResNet(generator: Generator(seed: 3))
        let before = model.stateDict()
        var bad = before
        bad.removeValue(forKey: "7.weight")
        bad["extra.weight"] = Tensor.zeros([2])
        bad["8.bias"] = Tensor.zeros([11])
        bad["0.convs.0.0.weight"] = Tensor.zeros([8, 1, 3, 3])  // valid change that must not be applied
        do {
            try model.load(stateDict: bad)
            Issue.record("load should have thrown")
        } catch let e as StateDictError {
            #expect(e.missing == ["7.weight"])
            #expect(e.unexpected == ["extra.weight"])
            #expect(e.mismatched == ["8.bias: model [10], given [11]"])
            #expect(e.description.contains("missing keys: 7.weight"))
        }
        for (k, v) in model.stateDict() { #expect(v.doubles == before[k]!.doubles, "\(k) changed") }
        // A dtype clash is refused too; non-strict loading skips missing/unexpected keys but not shapes.
        var clash = before
        clash["7.weight"] = before["7.weight"]!.to(.int64)
        #expect(throws: StateDictError.self) { try model.load(stateDict: clash) }
        var partial: [String: Tensor] = ["7.weight": Tensor.ones([10, 256]), "nope": Tensor.ones([1])]
        try model.load(stateDict: partial, strict: false)
        #expect(model.stateDict()["7.weight"]!.sum().item() == 2560)
        partial["8.weight"] = Tensor.ones([3])
        #expect(throws: StateDictError.self) { try model.load(stateDict: partial, strict: false) }
        // A file that is not safetensors throws and changes nothing.
        let path = NSTemporaryDirectory() + "swiftai-bad-\(getpid()).safetensors"
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: SafetensorsError.self) { try model.load(from: path) }
        #expect(model.stateDict()["7.weight"]!.sum().item() == 2560)
    }

    @Test func hooksModesApplyAndFreezing() {
        let model = Sequential(Linear(4, 3), ReLU(), Dropout(0.5), Linear(3, 2))
        var seen: [[Int]] = []
        let h = model[1].registerForwardHook { _, _, out in seen.append(out.shape) }
        _ = model(Tensor.randn([5, 4]))
        h.remove()
        h.remove()
        _ = model(Tensor.randn([5, 4]))
        #expect(seen == [[5, 3]])
        #expect(model[1].forwardHookCount == 0)
        model.eval()
        #expect(model.modules().allSatisfy { !$0.training })
        let x = Tensor.randn([2, 4])
        #expect(model(x).floats == model(x).floats)  // dropout off
        model.train()
        #expect(model[2].training)
        var visited: [String] = []
        model.apply { visited.append(String(describing: type(of: $0))) }
        #expect(visited == ["Linear", "Dropout", "ReLU", "Linear", "Sequential"])
        model[0].requiresGrad(false)
        let loss = model(Tensor.randn([5, 4])).sum()
        loss.backward()
        #expect((model[0] as! Linear).weight.grad == nil)
        #expect((model[3] as! Linear).weight.grad != nil)
        #expect(model[0..<2].count == 2 && model[-1] === model[3])
        #expect(model[0..<2].namedParameters().map(\.0) == ["0.weight", "0.bias"])
    }

    @Test func sharedParametersAppearOnce() {
        let lin = Linear(3, 3)
        let model = Sequential(lin, ReLU(), lin)
        #expect(model.parameters().count == 2)
        #expect(model.namedParameters().map(\.0) == ["0.weight", "0.bias"])
    }

    @Test func replacedModulesRunWhereverTheyAreStoredAndCanBePutBack() {
        let block = Block(), model = Sequential(block, Linear(2, 2))
        let x = Tensor.randn([4, 3]), names = model.namedParameters().map(\.0), before = noGrad { model(x) }
        var hooked = 0
        block.linear.registerForwardHook { m, _, _ in if m.training { hooked += 1 } }
        let swapped = model.replaceModules { m in
            (m as? Linear).flatMap { $0.weight.shape == [2, 3] ? Doubled($0) : nil }
        }
        #expect(swapped.count == 1 && swapped[0].0 === block.linear && swapped[0].1 is Doubled)
        // Calls to the stored layer run its replacement (then the layer's hooks); the tree lists it under its name.
        let doubled = noGrad {
            model[1](x.linear(weight: block.linear.weight.value * 2, bias: block.linear.bias!.value).relu())
        }
        expectClose(noGrad { model(x) }, doubled, rtol: 0, atol: 0, "replaced")
        #expect(hooked == 1 && model.modules().contains { $0 === swapped[0].1 })
        #expect(!model.modules().contains { $0 === block.linear })
        #expect(model.namedParameters().map(\.0) == names)
        model.eval()
        _ = model(x)
        #expect(hooked == 1 && !swapped[0].1.training)  // train(_:) reaches the replaced layer too
        model.replaceModules { $0 === swapped[0].1 ? block.linear : nil }
        expectClose(noGrad { model(x) }, before, rtol: 0, atol: 0, "put back")
        #expect(model.modules().contains { $0 === block.linear } && !model.modules().contains { $0 is Doubled })
    }
}

/// A user-written module with a layer in its own property.
private final class Block: Module {
    let linear = Linear(3, 2)
    let relu = ReLU()
    override func forward(_ x: Tensor) -> Tensor { relu(linear(x)) }
}

/// A stand-in for a Linear sharing its parameters, doubling the weight.
private final class Doubled: Module {
    let weight: Parameter, bias: Parameter?
    init(_ l: Linear) {
        (weight, bias) = (l.weight, l.bias)
        super.init()
    }
    override func forward(_ x: Tensor) -> Tensor { x.linear(weight: weight.value * 2, bias: bias?.value) }
}
