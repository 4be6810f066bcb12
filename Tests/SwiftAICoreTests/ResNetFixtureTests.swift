import Foundation
import Testing
@testable import SwiftAICore
import SwiftAITestSupport

/// The lesson's Fashion-MNIST ResNet written with Core ops only, parameters looked up by state-dict name.
struct CoreOpsResNet {
    var params: [String: Tensor]
    var buffers: [String: Tensor]

    mutating func convBlock(_ p: String, _ x: Tensor, stride: Int, ks: Int, act: Bool) -> Tensor {
        var y = x.conv2d(weight: params[p + ".0.weight"]!, stride: stride, padding: ks / 2)
        var rm = buffers[p + ".1.running_mean"]!, rv = buffers[p + ".1.running_var"]!
        y = y.batchNorm(
            weight: params[p + ".1.weight"], bias: params[p + ".1.bias"], runningMean: &rm, runningVar: &rv,
            training: true)
        buffers[p + ".1.running_mean"] = rm
        buffers[p + ".1.running_var"] = rv
        return act ? y.generalRelu(leak: 0.1, sub: 0.4) : y
    }

    mutating func resBlock(_ i: Int, _ x: Tensor, stride: Int) -> Tensor {
        let c = convBlock(
            "\(i).convs.1", convBlock("\(i).convs.0", x, stride: 1, ks: 3, act: true), stride: stride, ks: 3, act: false
        )
        let pooled = stride == 1 ? x : x.avgPool2d(kernel: 2, ceilMode: true)
        let id =
            params["\(i).idconv.0.weight"] == nil
            ? pooled : convBlock("\(i).idconv", pooled, stride: 1, ks: 1, act: false)
        return (c + id).generalRelu(leak: 0.1, sub: 0.4)
    }

    mutating func forward(_ x: Tensor) -> Tensor {
        var h = resBlock(0, x, stride: 1)
        for i in 1...5 { h = resBlock(i, h, stride: 2) }
        h = h.flatten(startDim: 1).linear(weight: params["7.weight"]!)
        var rm = buffers["8.running_mean"]!, rv = buffers["8.running_var"]!
        h = h.batchNorm(
            weight: params["8.weight"], bias: params["8.bias"], runningMean: &rm, runningVar: &rv, training: true)
        buffers["8.running_mean"] = rm
        buffers["8.running_var"] = rv
        return h
    }
}

@Suite struct ResNetFixtureTests {
    @Test func wholeTrainingStepMatchesPyTorch() throws {
        guard let f = try loadFixture("fmnist_resnet") else { return }
        let order = try JSONSerialization.jsonObject(with: Data(f.metadata["parameter_order"]!.utf8)) as! [String]
        var params: [String: Tensor] = [:], buffers: [String: Tensor] = [:]
        for (k, v) in f.tensors where k.hasPrefix("param.") {
            let name = String(k.dropFirst(6))
            if order.contains(name) { params[name] = v.requiringGrad() } else { buffers[name] = v }
        }
        #expect(params.count == order.count)
        var model = CoreOpsResNet(params: params, buffers: buffers)
        let out = model.forward(f.tensors["input"]!)
        expectClose(out, f.tensors["output"]!, "output")
        let loss = crossEntropy(out, f.tensors["target"]!)
        expectClose(loss.reshape([1]), f.tensors["loss"]!, "loss")
        loss.backward()
        for name in order {
            guard let g = params[name]!.grad else { Issue.record("no gradient for \(name)"); continue }
            expectClose(g, f.tensors["grad." + name]!, rtol: 1e-4, atol: 2e-5, "grad.\(name)")
        }
        for (name, v) in model.buffers {
            expectClose(v, f.tensors["after." + name]!, "after.\(name)")
        }
    }
}
