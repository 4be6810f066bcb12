import SwiftAICore

/// The lesson's Fashion-MNIST ResNet written directly with Core ops (used by `demo` and `bench step`).
struct CoreResNet {
    var params: [String: Tensor] = [:]
    var buffers: [String: Tensor] = [:]

    /// Kaiming-normal (leak 0.1) conv weights, BatchNorm weight 1 / bias 0, as the reference recipe.
    init(generator: Generator) {
        func conv(_ p: String, _ ni: Int, _ nf: Int, _ ks: Int) {
            let std = (2 / (1 + 0.01)).squareRoot() / Double(ni * ks * ks).squareRoot()
            params[p + ".0.weight"] = Tensor.randn([nf, ni, ks, ks], std: std, generator: generator).requiringGrad()
            bn(p + ".1", nf)
        }
        func bn(_ p: String, _ n: Int) {
            params[p + ".weight"] = Tensor.ones([n]).requiringGrad()
            params[p + ".bias"] = Tensor.zeros([n]).requiringGrad()
            buffers[p + ".running_mean"] = Tensor.zeros([n])
            buffers[p + ".running_var"] = Tensor.ones([n])
        }
        let nfs = [1, 8, 16, 32, 64, 128, 256]
        for i in 0..<6 {
            conv("\(i).convs.0", nfs[i], nfs[i + 1], 3)
            conv("\(i).convs.1", nfs[i + 1], nfs[i + 1], 3)
            conv("\(i).idconv", nfs[i], nfs[i + 1], 1)
        }
        params["7.weight"] = Tensor.uniform([10, 256], low: -1 / 16, high: 1 / 16, generator: generator).requiringGrad()
        bn("8", 10)
    }

    var parameters: [Tensor] { params.keys.sorted().map { params[$0]! } }

    mutating func convBlock(_ p: String, _ x: Tensor, stride: Int, ks: Int, act: Bool) -> Tensor {
        var y = x.conv2d(weight: params[p + ".0.weight"]!, stride: stride, padding: ks / 2)
        var rm = buffers[p + ".1.running_mean"]!, rv = buffers[p + ".1.running_var"]!
        y = y.batchNorm(weight: params[p + ".1.weight"], bias: params[p + ".1.bias"], runningMean: &rm, runningVar: &rv, training: true)
        buffers[p + ".1.running_mean"] = rm
        buffers[p + ".1.running_var"] = rv
        return act ? y.generalRelu(leak: 0.1, sub: 0.4) : y
    }

    mutating func forward(_ x: Tensor) -> Tensor {
        var h = x
        for i in 0..<6 {
            let stride = i == 0 ? 1 : 2
            let c = convBlock("\(i).convs.1", convBlock("\(i).convs.0", h, stride: 1, ks: 3, act: true), stride: stride, ks: 3, act: false)
            let pooled = stride == 1 ? h : h.avgPool2d(kernel: 2, ceilMode: true)
            h = (c + convBlock("\(i).idconv", pooled, stride: 1, ks: 1, act: false)).generalRelu(leak: 0.1, sub: 0.4)
        }
        h = h.flatten(startDim: 1).linear(weight: params["7.weight"]!)
        var rm = buffers["8.running_mean"]!, rv = buffers["8.running_var"]!
        h = h.batchNorm(weight: params["8.weight"], bias: params["8.bias"], runningMean: &rm, runningVar: &rv, training: true)
        buffers["8.running_mean"] = rm
        buffers["8.running_var"] = rv
        return h
    }
}
