import Testing
@testable import SwiftAICore
import SwiftAITestSupport

/// Finite-difference checks (Float64) of every differentiable op, including broadcasting and strided views.
@Suite struct GradcheckTests {
    @Test func arithmeticWithBroadcasting() {
        let a = randn([3, 1, 4], seed: 1), b = awayFromZero([2, 1], seed: 2, margin: 0.5)
        gradcheck([a, b], "add") { $0[0] + $0[1] }
        gradcheck([a, b], "sub") { $0[0] - $0[1] }
        gradcheck([a, b], "mul") { $0[0] * $0[1] }
        gradcheck([a, b], "div") { $0[0] / $0[1] }
        gradcheck([a], "scalar ops") { (2 - $0[0] * 3 + 1) / 4 }
        gradcheck([b], "rdiv") { 2 / $0[0] }
        gradcheck([a], "neg") { -$0[0] }
        gradcheck([a, b], "fixture expression") { $0[0] * $0[1].abs() + $0[0].exp() - $0[1].abs().sqrt() / 2 }
    }

    @Test func unaryMath() {
        let x = randn([2, 5], seed: 3), pos = randn([2, 5], seed: 4).abs() + 0.5
        gradcheck([x], "exp") { $0[0].exp() }
        gradcheck([x], "sin, cos") { $0[0].sin() * $0[0].cos() }
        gradcheck([pos], "log") { $0[0].log() }
        gradcheck([pos], "sqrt") { $0[0].sqrt() }
        gradcheck([awayFromZero([2, 5], seed: 5)], "abs") { $0[0].abs() }
        gradcheck([pos], "pow scalar") { $0[0].pow(2.5) }
        gradcheck([x], "square") { $0[0].squared() }
        gradcheck([pos, x], "pow tensor") { $0[0].pow($0[1]) }
        gradcheck([x], "sigmoid") { $0[0].sigmoid() }
        gradcheck([x], "tanh") { $0[0].tanh() }
        let k = awayFromZero([3, 4], seed: 6)
        gradcheck([k], "relu") { $0[0].relu() }
        gradcheck([k], "leakyRelu") { $0[0].leakyRelu(0.1) }
        gradcheck([k], "generalRelu") { $0[0].generalRelu(leak: 0.1, sub: 0.4, maxv: 0.9) }
        gradcheck([Tensor([-2.0, -0.5, 0.3, 1.7, 3.1])], "clamp") { $0[0].clamp(min: -1, max: 2) }
    }

    @Test func whereSelectsGradients() {
        let a = randn([3, 4], seed: 7), b = randn([4], seed: 8)
        let cond = randn([3, 4], seed: 9) .> 0
        gradcheck([a, b], "where") { Tensor.where(cond, $0[0], $0[1]) }
    }

    @Test func reductions() {
        let x = randn([3, 4, 5], seed: 10)
        gradcheck([x], "sum all") { $0[0].sum() }
        gradcheck([x], "sum dims keepDim") { $0[0].sum(dims: [0, 2], keepDim: true) }
        gradcheck([x], "mean dim") { $0[0].mean(dim: -1) }
        gradcheck([x], "variance") { $0[0].variance(dims: [1]) }
        gradcheck([x], "std correction 0") { $0[0].std(dims: [0, 2], correction: 0, keepDim: true) }
        gradcheck([x], "max dim") { $0[0].max(dim: 1).values }
        gradcheck([x], "min dim keepDim") { $0[0].min(dim: 2, keepDim: true).values }
        gradcheck([x], "global max") { $0[0].max() }
    }

    @Test func stridedViews() {
        let x = randn([4, 6], seed: 11)
        gradcheck([x], "transpose then exp") { $0[0].transpose(0, 1).exp() }
        gradcheck([x], "slice with step") { $0[0][1..<4, TensorIndex.range(0..<6, step: 2)] * 3 }
        gradcheck([x], "index and newAxis") { $0[0][2, .newAxis, .all].squared() }
        gradcheck([x], "negative index and ellipsis") { $0[0][.ellipsis, -1] }
        gradcheck([x], "reshape of permuted") { $0[0].permute([1, 0]).reshape([3, 8]).sigmoid() }
        gradcheck([x], "view, unsqueeze, squeeze") { $0[0].view([2, 12]).unsqueeze(1).squeeze(1).tanh() }
        gradcheck([x], "expand") { $0[0][.all, 0..<1].expand([4, 5]) * $0[0][.all, 1..<6] }
        gradcheck([x], "flatten / movedim") { $0[0].reshape([2, 3, 4]).movedim(0, 2).flatten(startDim: 1) }
        gradcheck([x], "contiguous of transposed") { $0[0].transpose(0, 1).contiguous() * 2 }
        gradcheck([x], "channels-last copy") { $0[0].reshape([1, 2, 3, 4]).contiguous(.channelsLast).exp() }
        gradcheck([x], eps: 1e-2, rtol: 1e-3, atol: 1e-4, "float32 round trip") {
            ($0[0].to(.float32).to(.float64)) * 1
        }
    }

    @Test func joiningAndPadding() {
        let a = randn([2, 3], seed: 12), b = randn([2, 2], seed: 13)
        gradcheck([a, b], "cat") { Tensor.cat([$0[0], $0[1]], dim: 1).exp() }
        gradcheck([a], "stack") { Tensor.stack([$0[0], $0[0] * 2], dim: 1) }
        gradcheck([a], "split") { $0[0].split([1, 2], dim: 1)[1] * $0[0].split(size: 1, dim: 1)[0] }
        gradcheck([a], "chunk") { $0[0].chunk(2, dim: 0)[1].squared() }
        gradcheck([randn([1, 2, 3, 3], seed: 14)], "pad") { $0[0].pad([1, 2, 0, 1], value: 0.5) }
        gradcheck([randn([1, 2, 4, 4], seed: 15)], "negative pad crops") { $0[0].pad([-1, 1, 1, -1]) }
    }

    @Test func matrixProducts() {
        gradcheck([randn([3, 4], seed: 16), randn([4, 2], seed: 17)], "matmul 2-D") { $0[0].matmul($0[1]) }
        gradcheck([randn([2, 3, 4], seed: 18), randn([4, 5], seed: 19)], "matmul broadcast") { $0[0].matmul($0[1]) }
        gradcheck([randn([2, 1, 3, 4], seed: 20), randn([3, 4, 2], seed: 21)], "matmul batched") { $0[0].matmul($0[1]) }
        gradcheck([randn([4], seed: 22), randn([4, 3], seed: 23)], "vector-matrix") { $0[0].matmul($0[1]) }
        gradcheck([randn([3, 4], seed: 24), randn([4], seed: 25)], "matrix-vector") { $0[0].matmul($0[1]) }
        gradcheck([randn([4, 3], seed: 26), randn([2, 4], seed: 27)], "transposed operands") {
            $0[0].transpose(0, 1).matmul($0[1].transpose(0, 1))
        }
        gradcheck([randn([5, 7], seed: 28), randn([3, 7], seed: 29), randn([3], seed: 30)], "linear") {
            $0[0].linear(weight: $0[1], bias: $0[2])
        }
        gradcheck([randn([2, 2, 7], seed: 31), randn([3, 7], seed: 32)], "linear 3-D input, no bias") {
            $0[0].linear(weight: $0[1])
        }
    }

    @Test func convolution() {
        gradcheck(
            [randn([2, 3, 5, 5], seed: 33), randn([4, 3, 3, 3], seed: 34), randn([4], seed: 35)], "conv2d pad 1 bias"
        ) {
            $0[0].conv2d(weight: $0[1], bias: $0[2], padding: 1)
        }
        gradcheck([randn([1, 2, 6, 5], seed: 36), randn([3, 2, 3, 3], seed: 37)], "conv2d stride 2") {
            $0[0].conv2d(weight: $0[1], stride: 2, padding: 1)
        }
        gradcheck([randn([1, 4, 4, 4], seed: 38), randn([6, 2, 3, 3], seed: 39)], "conv2d groups 2") {
            $0[0].conv2d(weight: $0[1], padding: 1, groups: 2)
        }
        gradcheck([randn([2, 3, 4, 4], seed: 40), randn([2, 3, 1, 1], seed: 41)], "conv2d 1x1 on channels-last view") {
            $0[0].contiguous(.channelsLast).conv2d(weight: $0[1])
        }
    }

    @Test func pooling() {
        let x = randn([2, 2, 5, 5], seed: 42)
        gradcheck([x], "avgPool ceil") { $0[0].avgPool2d(kernel: 2, ceilMode: true) }
        gradcheck([x], "avgPool padding") { $0[0].avgPool2d(kernel: 3, stride: 2, padding: 1) }
        gradcheck([x], "avgPool exclude pad") {
            $0[0].avgPool2d(kernel: 3, stride: 2, padding: 1, ceilMode: true, countIncludePad: false)
        }
        gradcheck([x], "maxPool ceil") { $0[0].maxPool2d(kernel: 2, ceilMode: true) }
        gradcheck([x], "maxPool padding") { $0[0].maxPool2d(kernel: 3, stride: 2, padding: 1) }
        gradcheck([x], "adaptive avg pool") { $0[0].adaptiveAvgPool2d((2, 3)) }
        gradcheck([x], "adaptive max pool") { $0[0].adaptiveMaxPool2d((2, 3)) }
        gradcheck([x], "global avg pool") { $0[0].globalAvgPool() }
        gradcheck([x], "pool on channels-last") { $0[0].contiguous(.channelsLast).avgPool2d(kernel: 2, ceilMode: true) }
    }

    @Test func batchNorm() {
        let x = randn([4, 3, 3, 2], seed: 43, scale: 2) + 0.5
        let w = randn([3], seed: 44).abs() + 0.5, b = randn([3], seed: 45)
        gradcheck([x, w, b], "batchNorm training NCHW") { $0[0].batchNorm(weight: $0[1], bias: $0[2]) }
        gradcheck([x, w, b], "batchNorm training channels-last") {
            $0[0].contiguous(.channelsLast).batchNorm(weight: $0[1], bias: $0[2])
        }
        gradcheck([randn([6, 5], seed: 46), randn([5], seed: 47), randn([5], seed: 48)], "batchNorm 1-D") {
            $0[0].batchNorm(weight: $0[1], bias: $0[2])
        }
        gradcheck([x, w, b], "batchNorm eval") {
            var rm = Tensor([0.1, -0.2, 0.3]), rv = Tensor([0.5, 1.5, 2.0])
            return $0[0].batchNorm(weight: $0[1], bias: $0[2], runningMean: &rm, runningVar: &rv, training: false)
        }
    }

    @Test func softmaxAndLosses() {
        let x = randn([4, 6], seed: 49, scale: 2)
        gradcheck([x], "softmax") { $0[0].softmax(dim: 1) }
        gradcheck([x], "logSoftmax dim 0") { $0[0].logSoftmax(dim: 0) }
        gradcheck([randn([2, 3, 4], seed: 50)], "softmax middle dim") { $0[0].softmax(dim: 1) }
        let t = Tensor([Int64(1), 0, 5, 2])
        for red in [Reduction.mean, .sum, .none] {
            gradcheck([x], "crossEntropy \(red)") { crossEntropy($0[0], t, reduction: red) }
        }
        gradcheck([x], "crossEntropy smoothing") { crossEntropy($0[0], t, labelSmoothing: 0.1) }
        let w = Tensor([1.0, 2, 0.5, 1, 1, 3])
        gradcheck([x], "crossEntropy weights + smoothing") { crossEntropy($0[0], t, weight: w, labelSmoothing: 0.2) }
        gradcheck([x], "crossEntropy ignoreIndex") { crossEntropy($0[0], Tensor([Int64(1), -100, 5, 2])) }
        let probs = randn([4, 6], seed: 51).softmax(dim: 1)
        gradcheck([x], "crossEntropy probabilities") { crossEntropy($0[0], probs) }
        gradcheck([x], "nllLoss") { nllLoss($0[0].logSoftmax(dim: 1), t) }
    }

    @Test func indexingOps() {
        let x = randn([3, 4], seed: 52)
        gradcheck([x], "gather") { $0[0].gather(dim: 1, index: Tensor([Int64(0), 3, 3, 1, 2, 0], shape: [3, 2])) }
        gradcheck([x], "indexSelect with repeats") { $0[0].indexSelect(dim: 1, index: Tensor([Int64(2), 0, 2])) }
        gradcheck([x], "indexSelect rows") { $0[0].indexSelect(dim: 0, index: Tensor([Int64(1), 1])) }
        gradcheck([x], "flip") { $0[0].flip(dim: 1) * $0[0] }
    }

    @Test func dropoutWithFixedGenerator() {
        let x = randn([4, 5], seed: 53)
        gradcheck([x], "dropout") { $0[0].dropout(p: 0.3, generator: Generator(seed: 7)) }
        gradcheck([randn([2, 3, 2, 2], seed: 54)], "dropout2d") {
            $0[0].dropout2d(p: 0.5, generator: Generator(seed: 8))
        }
    }
}

/// Float32 paths (oneDNN direct and the small-map GEMMs) against the Float64 reference loops.
@Suite struct ConvPathTests {
    @Test(arguments: [
        (n: 17, c: 5, h: 2, w: 2, oc: 7, k: 3, s: 2, p: 1),  // 2×2 → 1×1: per-position GEMMs (batches of 16 or more)
        (n: 16, c: 4, h: 2, w: 2, oc: 6, k: 3, s: 1, p: 1),  // 2×2 → 2×2
        (n: 16, c: 3, h: 1, w: 1, oc: 4, k: 3, s: 1, p: 1),  // 1×1
        (n: 16, c: 16, h: 7, w: 7, oc: 8, k: 3, s: 2, p: 1),  // 7×7, 16 channels
        (n: 3, c: 5, h: 2, w: 2, oc: 7, k: 3, s: 2, p: 1),  // the same map at a small batch: oneDNN
        (n: 2, c: 3, h: 4, w: 4, oc: 5, k: 3, s: 2, p: 1),  // 4×4 → 2×2
        (n: 2, c: 3, h: 4, w: 3, oc: 5, k: 3, s: 1, p: 1),  // 4×3, stride 1
        (n: 2, c: 2, h: 3, w: 3, oc: 4, k: 1, s: 1, p: 0),  // 1×1 kernel on 3×3
        (n: 2, c: 3, h: 5, w: 6, oc: 4, k: 3, s: 2, p: 1),  // oneDNN
        (n: 2, c: 1, h: 6, w: 6, oc: 8, k: 3, s: 1, p: 1)  // one input channel
    ])
    func float32MatchesReference(_ s: (n: Int, c: Int, h: Int, w: Int, oc: Int, k: Int, s: Int, p: Int)) {
        let x = randn([s.n, s.c, s.h, s.w], seed: 60), w = randn([s.oc, s.c, s.k, s.k], seed: 61),
            b = randn([s.oc], seed: 62)
        let ref = [x, w, b].map { $0.requiringGrad() }
        let y64 = ref[0].conv2d(weight: ref[1], bias: ref[2], stride: s.s, padding: s.p)
        let up = randn(y64.shape, seed: 63)
        y64.backward(up)
        let f = [x, w, b].map { $0.to(.float32).requiringGrad() }
        let y32 = f[0].conv2d(weight: f[1], bias: f[2], stride: s.s, padding: s.p)
        #expect(y32.isChannelsLast || s.oc == 1)
        y32.backward(up.to(.float32))
        expectClose(y32.to(.float64), y64, rtol: 1e-4, atol: 1e-4, "output")
        for i in 0..<3 { expectClose(f[i].grad!.to(.float64), ref[i].grad!, rtol: 1e-4, atol: 1e-4, "grad \(i)") }
    }
}

@Suite struct GemmPathTests {
    /// Products with cache-aliased leading dimensions take the padded-copy path; results must not change.
    @Test(arguments: [(64, 256, 512), (512, 512, 512), (256, 100, 256), (300, 256, 70)])
    func paddedProductsMatchReference(_ d: (Int, Int, Int)) {
        let a = randn([d.0, d.1], seed: 70), b = randn([d.1, d.2], seed: 71)
        let ref = a.matmul(b)
        expectClose(a.to(.float32).matmul(b.to(.float32)).to(.float64), ref, rtol: 1e-4, atol: 1e-3, "A·B")
        expectClose(
            b.to(.float32).transpose(0, 1).matmul(a.to(.float32).transpose(0, 1)).to(.float64),
            ref.transpose(0, 1), rtol: 1e-4, atol: 1e-3, "Bᵀ·Aᵀ")
    }
}
