import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAITestSupport

/// Zeroes the filters of `channels` in `group`'s convolution and the consumers' inputs from them: those channels
/// then rank smallest and contribute nothing, so removing them must not change the model's output.
private func kill(_ channels: [Int], of group: PrunableChannels, in model: Module) {
    let modules = Dictionary(model.namedModules(), uniquingKeysWith: { a, _ in a })
    func zero(_ p: Parameter, dim: Int) {
        let inner = p.shape[(dim + 1)...].reduce(1, *), dead = Set(channels)
        let v = p.value.doubles.enumerated().map { dead.contains($0.offset / inner % p.shape[dim]) ? 0 : $0.element }
        p.setData(Tensor(v, shape: p.shape))
    }
    zero((modules[group.conv] as! Conv2d).weight, dim: 0)
    for name in group.consumers { zero((modules[name] as! Conv2d).weight, dim: 1) }
}

@Suite struct ChannelPruningTests {
    /// Every prunable group of every kind of model: names, channel counts and parameter counts as built.
    @Test func prunableChannelsDescribeTheBuiltModels() {
        let specs: [ModelSpec] = [
            .lesson(.cnn), .lesson(.resnet), .lesson(.wide), .resnet(.resnet18, nIn: 3, nOut: 10),
            .resnet(.resnet50, nIn: 1, nOut: 5), .vision(VisionModelSpec(arch: .resnet18, nOut: 4)),
            .vision(VisionModelSpec(arch: .resnet50, nOut: 4, cut: 6))
        ]
        let counts = [4, 6, 5, 8, 32, 8, 14]
        for (spec, count) in zip(specs, counts) {
            let model = Init.skipping { spec.make() }
            let modules = Dictionary(model.namedModules(), uniquingKeysWith: { a, _ in a })
            #expect(spec.prunableChannels.count == count, "\(spec)")
            for g in spec.prunableChannels {
                guard let conv = modules[g.conv] as? Conv2d, modules[g.norm] is BatchNorm2d else {
                    Issue.record("\(spec): \(g.conv) / \(g.norm) missing")
                    continue
                }
                let consumers = g.consumers.compactMap { modules[$0] as? Conv2d }
                #expect(conv.weight.shape[0] == g.channels && consumers.count == g.consumers.count, "\(g.conv)")
                let perChannel =
                    conv.weight.value.count / g.channels + (conv.bias == nil ? 0 : 1) + 2
                    + consumers.reduce(0) { $0 + $1.weight.value.count / $1.weight.shape[1] }
                #expect(g.parametersPerChannel == perChannel, "\(g.conv)")
            }
        }
    }

    /// Removing channels that contribute nothing leaves the outputs as they were (evaluation mode).
    @Test(arguments: [ModelSpec.lesson(.cnn), .lesson(.wide), .resnet(.resnet18, nIn: 3, nOut: 10)])
    func removingDeadChannelsKeepsTheFunction(spec: ModelSpec) throws {
        let model = spec.make(generator: Generator(seed: 4))
        randomiseBatchNorms(model, seed: 5)
        model.eval()
        var expected: [String: Int] = [:]
        for (i, g) in spec.prunableChannels.enumerated() {
            let dead = (0..<(g.channels / 2)).map { ($0 * 2 + i) % g.channels }  // round(0.5 · C) channels, spread
            kill(dead, of: g, in: model)
            expected[g.conv] = g.channels - dead.count
        }
        let x = Tensor.randn([2, spec.nIn, 32, 32], generator: Generator(seed: 6))
        let before = model(x), parameters = model.parameterCount
        let pruned = try spec.pruneChannels(of: model, amount: 0.5)
        #expect(pruned.widths == expected)
        expectClose(model(x), before, rtol: 1e-5, atol: 1e-5, "\(spec)")
        #expect(
            model.parameterCount == Init.skipping { pruned.make() }.parameterCount && model.parameterCount < parameters)
        #expect(pruned.minimumParameterCount <= model.parameterCount)
    }

    /// The kept channels are those with the largest filter L1 norms: PyTorch's `prune.ln_structured` masks
    /// (torch 2.9.1, `n=1, dim=0`) and a count by hand agree.
    @Test func smallestL1ChannelsAreRemoved() throws {
        // w[i] = sin(1.7 i + 0.3) · (1 + 0.1 · (3c mod 8)) for filter c = i / 9 of cnn's first conv (8 × 1 × 3 × 3).
        let values: [Double] = (0..<72).map { i in
            let scale = 1 + 0.1 * Double((3 * (i / 9)) % 8)
            return sin(1.7 * Double(i) + 0.3) * scale
        }
        let norms: [Double] = (0..<8).map { c in values[(9 * c)..<(9 * c + 9)].reduce(0) { $0 + abs($1) } }
        let cases: [(Double, [Int])] = [(0.5, [2, 4, 5, 7]), (0.3, [1, 2, 4, 5, 6, 7])]
        for (amount, torchKept) in cases {
            let model = FashionMNISTModel.cnn.make(generator: Generator(seed: 1))
            let conv = (model[0] as! Sequential)[0] as! Conv2d
            conv.weight.setData(Tensor(values, shape: [8, 1, 3, 3]))
            let next = ((model[1] as! Sequential)[0] as! Conv2d).weight.value.detached()
            let spec = try ModelSpec.lesson(.cnn).pruneChannels(of: model, amount: amount)
            let pruned = Int((amount * 8).rounded(.toNearestOrEven))
            let byHand = Array(norms.indices.sorted { norms[$0] > norms[$1] }.prefix(8 - pruned)).sorted()
            #expect(byHand == torchKept)
            let kept = Tensor(torchKept.map { Int64($0) })
            let filters = Tensor(values.map { Float($0) }, shape: [8, 1, 3, 3]).indexSelect(dim: 0, index: kept)
            expectClose(conv.weight.value, filters, "filters")
            // The next conv loses those inputs and its own smallest filters, ranked on its unpruned weights.
            let nextNorms = next.to(.float64).reshape([16, -1]).abs().sum(dims: [1]).doubles
            let nextPruned = Int((amount * 16).rounded(.toNearestOrEven))
            let nextKept = Array(nextNorms.indices.sorted { nextNorms[$0] > nextNorms[$1] }.prefix(16 - nextPruned))
                .sorted()
            let nextConv = (model[1] as! Sequential)[0] as! Conv2d
            let nextWant = next.indexSelect(dim: 1, index: kept).indexSelect(
                dim: 0, index: Tensor(nextKept.map { Int64($0) }))
            expectClose(nextConv.weight.value, nextWant, "next conv")
            #expect(
                spec.widths == [
                    "0.0": torchKept.count, "1.0": nextKept.count,
                    "2.0": 32 - Int((amount * 32).rounded(.toNearestOrEven)),
                    "3.0": 64 - Int((amount * 64).rounded(.toNearestOrEven))
                ])
        }
    }

    @Test func widthsRoundTripThroughJSON() throws {
        let specs: [ModelSpec] = [
            ModelSpec.lesson(.resnet).withWidths(["0.convs.0.0": 3, "5.convs.0.0": 100]),
            ModelSpec.vision(VisionModelSpec(arch: .resnet50, nOut: 7)).withWidths(["0.7.2.conv2": 1]),
            .resnet(.resnet18, nIn: 3, nOut: 2)
        ]
        for spec in specs {
            let data = try JSONSerialization.data(withJSONObject: spec.json)
            let back = try ModelSpec(json: JSONSerialization.jsonObject(with: data) as! [String: Any])
            #expect(back == spec)
            #expect(back.widths == spec.widths)
        }
        #expect(specs[0].withWidths(["0.convs.0.0": 8]).widths == ["5.convs.0.0": 100])  // the original count: unpruned
        #expect(ModelSpec.lesson(.cnn).withWidths([:]) == .lesson(.cnn))
    }

    @Test func badWidthsAreRefused() throws {
        let base = ModelSpec.lesson(.resnet).json
        let cases: [(Any, String)] = [
            (["0.convs.1.0": 4], "'widths' names '0.convs.1.0', which is not a prunable convolution"),
            (["0.convs.0.0": 0], "'widths.0.convs.0.0' must be an integer in 1…8"),
            (["0.convs.0.0": 9], "'widths.0.convs.0.0' must be an integer in 1…8"),
            (["0.convs.0.0": 2.5], "must be an integer"),
            (["0.convs.0.0": "4"], "must be an integer"),
            ([4], "'widths' must be an object")
        ]
        for (widths, message) in cases {
            do {
                _ = try ModelSpec(json: base.merging(["widths": widths]) { $1 })
                Issue.record("accepted \(widths)")
            } catch let e as ModelSpecError {
                #expect(e.reason.contains(message), "\(e.reason)")
            } catch { Issue.record("\(error)") }
        }
        let withNull = try ModelSpec(json: base.merging(["widths": NSNull()]) { $1 })
        #expect(withNull == .lesson(.resnet))
    }

    /// A pruned description's lower bound stays below what its model has (torchvision's: exactly it).
    @Test func minimumParameterCountBoundsPrunedModels() {
        for spec in [
            ModelSpec.resnet(.resnet18, nIn: 3, nOut: 10), .resnet(.resnet50, nIn: 3, nOut: 10),
            .vision(VisionModelSpec(arch: .resnet34, nOut: 3))
        ] {
            let narrowest = spec.withWidths(
                Dictionary(uniqueKeysWithValues: spec.prunableChannels.map { ($0.conv, 1) }))
            let actual = Init.skipping { narrowest.make() }.parameterCount
            let bound = narrowest.minimumParameterCount
            if case .resnet = spec {
                #expect(bound == actual, "\(spec)")
            } else {
                #expect(bound <= actual && bound > actual / 2, "\(spec): \(bound) of \(actual)")
            }
            let half = spec.withWidths(
                Dictionary(uniqueKeysWithValues: spec.prunableChannels.map { ($0.conv, $0.channels / 2) }))
            let halfBound = half.minimumParameterCount
            #expect(halfBound <= Init.skipping { half.make() }.parameterCount && halfBound > actual)
        }
    }
}
