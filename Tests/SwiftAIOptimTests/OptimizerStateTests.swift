import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

@Suite struct OptimizerStateTests {
    static func model(seed: UInt64, hidden: Int = 8) -> Sequential {
        let gen = Generator(seed: seed)
        return Sequential(
            Linear(4, hidden, generator: gen), BatchNorm1d(hidden), ReLU(),
            Linear(hidden, 3, generator: gen))
    }

    static let x = Tensor.randn([16, 4], generator: Generator(seed: 100))
    static let y = Tensor.randn([16, 3], generator: Generator(seed: 101))
    /// A different learning rate at every step.
    static let lrs = [1e-2, 3e-3, 2e-2, 5e-3, 1e-3, 7e-3, 1e-2, 4e-3, 2e-3, 6e-3]

    static func optimizer(_ kind: String, _ m: Module) -> Optimizer {
        switch kind {
        case "AdamW": return AdamW.fastai(m, lr: 1e-2, wd: 0.1)  // two groups: BatchNorm and biases undecayed
        case "Adam": return Adam(m.parameters(), lr: 1e-2, betas: (0.9, 0.99), weightDecay: 1e-2)
        case "SGD": return SGD(m.parameters(), lr: 1e-2, momentum: 0.9, dampening: 0.1, weightDecay: 1e-2)
        case "RMSProp": return RMSProp(m.parameters(), lr: 1e-2, alpha: 0.9, weightDecay: 1e-2, momentum: 0.5)
        default: return AutoAnnealAdam(m.parameters(), lr: 1e-2, betas: (0.9, 0.99))
        }
    }

    static func train(_ m: Module, _ opt: Optimizer, steps: Range<Int>) {
        for i in steps {
            opt.set(\.lr, lrs[i])
            mseLoss(m(x), y).backward()
            opt.step()
            opt.zeroGrad()
        }
    }

    /// Everything an optimizer holds: its metadata and its tensors' values.
    static func contents(_ opt: Optimizer) throws -> (json: String, tensors: [String: [Double]]) {
        let sd = opt.stateDict()
        return (try sd.metadata.json(), sd.tensors.mapValues(\.doubles))
    }

    @Test(arguments: ["AdamW", "SGD", "RMSProp", "Adam", "AutoAnnealAdam"])
    func resumedRunMatchesUninterruptedBitForBit(_ kind: String) throws {
        let straight = Self.model(seed: 1)
        Self.train(straight, Self.optimizer(kind, straight), steps: 0..<10)

        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = Self.model(seed: 1), firstOpt = Self.optimizer(kind, first)
        Self.train(first, firstOpt, steps: 0..<5)
        try first.save(to: dir + "/model.safetensors")
        try firstOpt.save(to: URL(fileURLWithPath: dir + "/opt.safetensors"))

        let resumed = Self.model(seed: 2), opt = Self.optimizer(kind, resumed)
        try resumed.load(from: dir + "/model.safetensors")
        try opt.load(from: URL(fileURLWithPath: dir + "/opt.safetensors"))
        #expect(opt.stepCount == 5 && opt.hasState)
        #expect(try Self.contents(opt) == Self.contents(firstOpt))
        Self.train(resumed, opt, steps: 5..<10)
        #expect(resumed.parameters().map(\.value.floats) == straight.parameters().map(\.value.floats), "\(kind)")
    }

    @Test func stepsAreIntegersAndStateIsTyped() throws {
        let m = Self.model(seed: 1), opt = AdamW(m.parameters(), lr: 1e-2)
        Self.train(m, opt, steps: 0..<3)
        let w = m.parameters()[0]
        #expect(opt.state(for: w)?.step == 3 && opt.state(for: w)?.expAvg?.shape == w.shape)
        let sd = opt.stateDict()
        #expect(sd.metadata.state.keys.sorted() == Array(m.parameters().indices))
        #expect(sd.metadata.state.values.allSatisfy { $0.step == 3 })
        #expect(try sd.metadata.json().contains(#""state":{"0":{"step":3}"#))
        #expect(try OptimizerMetadata(json: sd.metadata.json()) == sd.metadata)
    }

    /// The layout of `torch.optim` state dicts (torch 2.9.1, `scripts/make_optim_state_fixture.py`): the same
    /// parameter indices, state names and shapes, and param_groups keys (ours a subset of torch's, plus `lrMult`).
    @Test func layoutMatchesPyTorch() throws {
        let path = committedFixture("SwiftAIOptimTests", "torch_optim_state_layout.json")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let torch = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let makers: [String: ([Parameter]) -> Optimizer] = [
            "AdamW": { AdamW($0, lr: 0.01, betas: (0.9, 0.99), eps: 1e-5, weightDecay: 0.1) },
            "SGD": { SGD($0, lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01) },
            "RMSProp": { RMSProp($0, lr: 0.01, alpha: 0.9, eps: 1e-6, weightDecay: 0.01, momentum: 0.5) },
            "AdamW_two_groups": { p in
                let h = Hyper(lr: 0.01, mom: 0.9, sqrMom: 0.99, eps: 1e-5, wd: 0.1)
                var noDecay = h
                noDecay.wd = 0
                return AdamW([ParamGroup([p[0]], h), ParamGroup([p[1]], noDecay)])
            }
        ]
        for (name, make) in makers {
            let reference = try #require(torch[name] as? [String: Any])
            let lin = Linear(3, 2)
            let opt = make([lin.weight, lin.bias!])
            for _ in 0..<2 {
                (lin(Tensor.ones([4, 3]))).squared().sum().backward()
                opt.step()
                opt.zeroGrad()
            }
            let sd = opt.stateDict()
            var ours: [String: [String: [Int]]] = [:]
            for (key, t) in sd.tensors {
                let parts = key.split(separator: ".").map(String.init)
                #expect(parts.count == 3 && parts[0] == "state", "\(key)")
                ours[parts[1], default: [:]][parts[2]] = t.shape
            }
            for (i, _) in sd.metadata.state { ours["\(i)", default: [:]]["step"] = [] }
            #expect(ours == reference["state"] as? [String: [String: [Int]]], "\(name) state")

            let json = try JSONSerialization.jsonObject(with: Data(sd.metadata.json().utf8)) as! [String: Any]
            let groups = json["param_groups"] as! [[String: Any]]
            let torchGroups = reference["param_groups"] as! [[String: Any]]
            #expect(groups.count == torchGroups.count, "\(name)")
            for (g, t) in zip(groups, torchGroups) {
                #expect(Set(g.keys).subtracting(t.keys) == ["lrMult"], "\(name): keys torch lacks")
                for (key, value) in g where key != "lrMult" {
                    #expect(try canonical(value) == canonical(t[key] as Any), "\(name) \(key): \(value)")
                }
            }
        }
    }

    /// A JSON value's text, to compare values parsed from two documents.
    func canonical(_ v: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: [v], options: [.sortedKeys]), as: UTF8.self)
    }

    @Test func embedsInALargerFileUnderAPrefix() throws {
        let m = Self.model(seed: 1), opt = Self.optimizer("AdamW", m)
        Self.train(m, opt, steps: 0..<3)
        let part = try opt.stateDict().fileContents(prefix: "optimizer.")
        #expect(part.tensors.keys.allSatisfy { $0.hasPrefix("optimizer.state.") })
        let all = m.stateDict().merging(part.tensors) { a, _ in a }
        let bytes = Safetensors.encode(all, metadata: part.metadata.merging(["epoch": "3"]) { a, _ in a })
        let (tensors, metadata) = try Safetensors.decode(bytes)
        let other = Self.optimizer("AdamW", Self.model(seed: 1))
        try other.load(stateDict: OptimizerStateDict(fileTensors: tensors, metadata: metadata, prefix: "optimizer."))
        #expect(try Self.contents(other) == Self.contents(opt))
    }

    /// A trained optimizer over `model(seed: 1)`'s parameters, and a different state to offer it.
    static func target() -> (Optimizer, OptimizerStateDict, [Parameter]) {
        let m = Self.model(seed: 1), opt = AdamW(m.parameters(), lr: 1e-2)
        Self.train(m, opt, steps: 0..<3)
        let donor = Self.model(seed: 5), donorOpt = AdamW(donor.parameters(), lr: 0.5)
        Self.train(donor, donorOpt, steps: 4..<6)
        return (opt, donorOpt.stateDict(), m.parameters())
    }

    static func expectRefused(
        _ opt: Optimizer, _ sd: OptimizerStateDict, _ error: OptimizerStateError,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let before = try contents(opt), hypers = opt.paramGroups.map(\.hyper), steps = opt.stepCount
        #expect(throws: error, sourceLocation: sourceLocation) { try opt.load(stateDict: sd) }
        #expect(try contents(opt) == before, sourceLocation: sourceLocation)
        #expect(opt.paramGroups.map(\.hyper) == hypers && opt.stepCount == steps, sourceLocation: sourceLocation)
    }

    @Test func refusesStateThatDoesNotFit() throws {
        let (opt, good, params) = Self.target()
        let last = params.count - 1

        let fewer = AdamW(Array(Self.model(seed: 5).parameters().dropLast()), lr: 0.5)
        try Self.expectRefused(
            opt, fewer.stateDict(),
            .parameterCount(group: 0, expected: params.count, found: params.count - 1))

        let wide = Self.model(seed: 5, hidden: 9), wideOpt = AdamW(wide.parameters(), lr: 0.5)
        Self.train(wide, wideOpt, steps: 0..<1)
        try Self.expectRefused(
            opt, wideOpt.stateDict(),
            .shape(
                tensor: "state.0.exp_avg", expected: params[0].shape,
                found: wide.parameters()[0].shape))

        var double = good
        double.tensors["state.\(last).exp_avg"] = good.tensors["state.\(last).exp_avg"]!.to(.float64)
        try Self.expectRefused(
            opt, double,
            .dtype(
                tensor: "state.\(last).exp_avg", expected: .float32,
                found: .float64))

        let sgd = SGD(params, lr: 0.1, momentum: 0.9)
        try Self.expectRefused(opt, sgd.stateDict(), .wrongKind(expected: "AdamW", found: "SGD"))
        let adam = Adam(params, lr: 0.1)
        try Self.expectRefused(opt, adam.stateDict(), .wrongKind(expected: "AdamW", found: "Adam"))
        let twoGroups = AdamW([
            ParamGroup([params[0]], Hyper(lr: 1)),
            ParamGroup(Array(params.dropFirst()), Hyper(lr: 1))
        ])
        try Self.expectRefused(opt, twoGroups.stateDict(), .groupCount(expected: 1, found: 2))

        // Damage to the last parameter's entry: every earlier check has passed, still nothing changes.
        var missing = good
        missing.tensors["state.\(last).exp_avg_sq"] = nil
        try Self.expectRefused(opt, missing, .missingState(parameter: last, name: "exp_avg_sq"))
        var noStep = good
        noStep.metadata.state[last] = nil
        try Self.expectRefused(opt, noStep, .missingState(parameter: last, name: "step"))
        var negative = good
        negative.metadata.state[last] = .init(step: -1)
        try Self.expectRefused(opt, negative, .invalidStep(parameter: last, step: -1))
        var unknown = good
        unknown.tensors["state.\(last).max_exp_avg_sq"] = good.tensors["state.\(last).exp_avg"]
        try Self.expectRefused(opt, unknown, .unexpectedState("state.\(last).max_exp_avg_sq"))
        var beyond = good
        beyond.tensors["state.\(params.count).exp_avg"] = Tensor.zeros([1])
        try Self.expectRefused(opt, beyond, .unexpectedState("state.\(params.count).exp_avg"))
        var noBetas = good
        noBetas.metadata.paramGroups[0].betas = nil
        try Self.expectRefused(opt, noBetas, .missingHyperParameter(group: 0, name: "betas"))
        var coupled = good
        coupled.metadata.paramGroups[0].decoupledWeightDecay = false
        try Self.expectRefused(
            opt, coupled,
            .invalidHyperParameter(
                group: 0, name: "decoupled_weight_decay",
                reason: "saved false, this optimizer's is true"))
        var shuffled = good
        shuffled.metadata.paramGroups[0].params.reverse()
        try Self.expectRefused(
            opt, shuffled,
            .parameterIndices(
                group: 0, expected: 0..<params.count,
                found: shuffled.metadata.paramGroups[0].params))

        try opt.load(stateDict: good)  // and the donor's own state loads
        #expect(opt.paramGroups[0].hyper.lr == 7e-3 && opt.stepCount == 2)
    }

    @Test func refusesDamagedFiles() throws {
        let (opt, _, _) = Self.target()
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let url = URL(fileURLWithPath: dir + "/opt.safetensors")
        try opt.save(to: url)
        let bytes = try Data(contentsOf: url)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["opt.safetensors"])  // no temporary left
        let before = try Self.contents(opt)

        let cut = URL(fileURLWithPath: dir + "/cut.safetensors")
        try bytes.prefix(bytes.count - 10).write(to: cut)
        let truncated = #expect(throws: SafetensorsError.self) { try opt.load(from: cut) }
        #expect(truncated.map { if case .truncated = $0 { true } else { false } } == true, "\(truncated as Any)")
        let weights = dir + "/model.safetensors"
        try Self.model(seed: 1).save(to: weights)
        let notState = "no 'swiftai.optimizer' metadata: not a file of optimizer state"
        #expect(throws: OptimizerStateError.badMetadata(notState)) {
            try opt.load(from: URL(fileURLWithPath: weights))
        }
        let garbled = dir + "/garbled.safetensors"
        try Safetensors.write([:], metadata: [OptimizerMetadata.key: "{\"kind\": 3}"], to: garbled)
        let bad = #expect(throws: OptimizerStateError.self) { try opt.load(from: URL(fileURLWithPath: garbled)) }
        #expect(bad.map { if case .badMetadata = $0 { true } else { false } } == true, "\(bad as Any)")
        #expect(throws: SafetensorsError.self) { try opt.load(from: URL(fileURLWithPath: dir + "/absent.safetensors")) }
        #expect(try Self.contents(opt) == before)
    }

    @Test func regroupingKeepsStateAndRemovedParametersLoseIt() {
        let m = Self.model(seed: 1), opt = AdamW(m.parameters(), lr: 1e-2)
        Self.train(m, opt, steps: 0..<2)
        let params = m.parameters()
        opt.paramGroups = [
            ParamGroup(Array(params.prefix(2)), opt.paramGroups[0].hyper),
            ParamGroup(Array(params.dropFirst(2)), opt.paramGroups[0].hyper)
        ]
        #expect(params.allSatisfy { opt.state(for: $0)?.step == 2 })
        opt.paramGroups = [opt.paramGroups[1]]
        #expect(opt.state(for: params[0]) == nil && opt.state(for: params[2])?.step == 2)
        opt.resetState()
        #expect(!opt.hasState)
    }
}
