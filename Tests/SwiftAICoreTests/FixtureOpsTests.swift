import Foundation
import Testing
@testable import SwiftAICore
import SwiftAITestSupport

/// Every case of `../shared/fixtures/ops.safetensors` (PyTorch 2.9.1 values): forward and each `grad.*`.
@Suite struct FixtureOpsTests {
    struct Case {
        let name: String
        let t: [String: Tensor]
        let params: [String: Any]
        subscript(_ k: String) -> Tensor { t[name + "." + k]! }
        func has(_ k: String) -> Bool { t[name + "." + k] != nil }
        func int(_ k: String) -> Int { params[k] as! Int }
        func bool(_ k: String) -> Bool { params[k] as! Bool }
    }

    static func cases(_ prefix: String) throws -> [Case] {
        guard let f = try loadFixture("ops") else { return [] }
        let names = Set(f.tensors.keys.map { String($0.split(separator: ".")[0]) }).filter { $0.hasPrefix(prefix) }
            .sorted()
        return names.map { n in
            let meta =
                f.metadata[n].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: Any]
                ?? [:]
            return Case(name: n, t: f.tensors, params: meta)
        }
    }

    /// Runs `f` on fresh leaves for `inputs`, back-propagates `grad_output`, and compares output and grads.
    func check(
        _ c: Case, inputs: [String], sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Tensor]) -> Tensor
    ) {
        let xs = inputs.map { c[$0].requiringGrad() }
        let y = f(xs)
        expectClose(y, c["output"], "\(c.name) output", sourceLocation: sourceLocation)
        y.backward(c["grad_output"])
        for (k, x) in zip(inputs, xs) {
            guard let g = x.grad else {
                Issue.record("\(c.name): no gradient for \(k)", sourceLocation: sourceLocation)
                continue
            }
            expectClose(g, c["grad." + k], "\(c.name) grad.\(k)", sourceLocation: sourceLocation)
        }
    }

    @Test func conv2d() throws {
        let cs = try Self.cases("conv2d_")
        #expect(cs.count == 6 || fixturesDirectory == nil)
        for c in cs {
            let names = ["input", "weight"] + (c.has("bias") ? ["bias"] : [])
            check(c, inputs: names) {
                $0[0].conv2d(
                    weight: $0[1], bias: $0.count > 2 ? $0[2] : nil, stride: c.int("stride"), padding: c.int("padding"))
            }
        }
    }

    @Test func batchNorm() throws {
        let cs = try Self.cases("batchnorm_")
        #expect(cs.count == 3 || fixturesDirectory == nil)
        for c in cs {
            var rm = c["running_mean"], rv = c["running_var"]
            check(c, inputs: ["input", "weight", "bias"]) {
                $0[0].batchNorm(
                    weight: $0[1], bias: $0[2], runningMean: &rm, runningVar: &rv, training: c.bool("training"),
                    momentum: 0.1, eps: 1e-5)
            }
            expectClose(rm, c["running_mean_after"], "\(c.name) running_mean")
            expectClose(rv, c["running_var_after"], "\(c.name) running_var")
        }
    }

    @Test func pooling() throws {
        let cs = try Self.cases("avgpool_") + Self.cases("maxpool_")
        #expect(cs.count == 6 || fixturesDirectory == nil)
        for c in cs {
            let k = c.int("kernel"), s = c.int("stride"), p = c.int("padding"), ceil = c.bool("ceil_mode")
            check(c, inputs: ["input"]) {
                c.name.hasPrefix("avg")
                    ? $0[0].avgPool2d(kernel: k, stride: s, padding: p, ceilMode: ceil)
                    : $0[0].maxPool2d(kernel: k, stride: s, padding: p, ceilMode: ceil)
            }
        }
    }

    @Test func linearAndMatmul() throws {
        for c in try Self.cases("linear_") {
            check(c, inputs: ["input", "weight", "bias"]) { $0[0].linear(weight: $0[1], bias: $0[2]) }
        }
        for c in try Self.cases("matmul_batched_") {
            check(c, inputs: ["a", "b"]) { $0[0].matmul($0[1]) }
        }
    }

    @Test func softmaxFamilyAndCrossEntropy() throws {
        for c in try Self.cases("log_softmax_") { check(c, inputs: ["input"]) { $0[0].logSoftmax(dim: c.int("dim")) } }
        for c in try Self.cases("softmax_") { check(c, inputs: ["input"]) { $0[0].softmax(dim: c.int("dim")) } }
        let ce = try Self.cases("cross_entropy_")
        #expect(ce.count == 3 || fixturesDirectory == nil)
        for c in ce {
            let red = Reduction(rawValue: c.params["reduction"] as! String)!
            check(c, inputs: ["input"]) { crossEntropy($0[0], c["target"], reduction: red) }
        }
    }

    @Test func generalReluGlobalPoolBroadcast() throws {
        for c in try Self.cases("general_relu_") {
            let leak = c.params["leak"] as! Double, sub = c.params["sub"] as! Double
            check(c, inputs: ["input"]) { $0[0].generalRelu(leak: leak, sub: sub) }
            check(c, inputs: ["input"]) { $0[0].leakyRelu(leak) - sub }
        }
        for c in try Self.cases("global_avg_pool_") {
            check(c, inputs: ["input"]) { $0[0].mean(dims: [-2, -1]) }
            check(c, inputs: ["input"]) { $0[0].globalAvgPool() }
        }
        for c in try Self.cases("broadcast_") {
            check(c, inputs: ["a", "b"]) { $0[0] * $0[1] + $0[0].exp() - $0[1].sqrt() / 2 }
        }
    }
}
