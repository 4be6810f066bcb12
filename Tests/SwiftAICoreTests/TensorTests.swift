import Testing
import CDNNL
@testable import SwiftAICore
import SwiftAITestSupport

@Suite struct TensorTests {
    @Test func creation() {
        #expect(Tensor.zeros([2, 3]).floats == [Float](repeating: 0, count: 6))
        #expect(Tensor.ones([2], dtype: .int64).scalars(as: Int64.self) == [1, 1])
        #expect(Tensor.full([2], 2.5, dtype: .float64).doubles == [2.5, 2.5])
        #expect(Tensor.arange(0, 5).scalars(as: Int64.self) == [0, 1, 2, 3, 4])
        #expect(Tensor.arange(1, 2, step: 0.25, dtype: .float32).floats == [1, 1.25, 1.5, 1.75])
        #expect(Tensor.linspace(0, 1, count: 5).floats == [0, 0.25, 0.5, 0.75, 1])
        #expect(Tensor.eye(2, 3).floats == [1, 0, 0, 0, 1, 0])
        #expect(Tensor(rows: [[1.0, 2], [3, 4]]).shape == [2, 2])
        #expect(Tensor(scalar: Float(3)).rank == 0)
        #expect(Tensor.zeros(like: Tensor.ones([1, 3, 2, 2]).contiguous(.channelsLast)).isChannelsLast)
    }

    @Test func seededRandomIsReproducible() {
        let a = Tensor.randn([100], generator: Generator(seed: 42)).floats
        let b = Tensor.randn([100], generator: Generator(seed: 42)).floats
        let c = Tensor.randn([100], generator: Generator(seed: 43)).floats
        #expect(a == b)
        #expect(a != c)
        // The sequence is fixed by the algorithm (xoshiro256** seeded through SplitMix64): first values pinned.
        let g = Generator(seed: 0)
        #expect(g.next() == 0x99EC_5F36_CB75_F2B4)
        let u = Tensor.rand([10_000], generator: Generator(seed: 1)).floats
        #expect(u.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = u.reduce(0, +) / 10_000
        #expect(abs(mean - 0.5) < 0.02)
        let n = Tensor.randn([20_000], generator: Generator(seed: 2))
        #expect(abs(n.mean().item()) < 0.03 && abs(n.std().item() - 1) < 0.03)
        let ri = Tensor.randint(3, 7, [1000], generator: Generator(seed: 3)).scalars(as: Int64.self)
        #expect(Set(ri) == [3, 4, 5, 6])
        let bern = Tensor.bernoulli([10_000], p: 0.3, generator: Generator(seed: 4)).mean().item()
        #expect(abs(bern - 0.3) < 0.02)
        // A generator's state restores its sequence (a private one: tests in parallel draw from the default).
        let gen = Generator(seed: 5)
        _ = gen.next()
        let state = gen.state
        let first = Tensor.rand([5], generator: gen).floats
        gen.restore(state)
        #expect(Tensor.rand([5], generator: gen).floats == first)
    }

    @Test func dtypesConvert() {
        let x = Tensor([1.5, -2.25, 3.0, 1e10], shape: [4])
        #expect(x.to(.float32).to(.float64).doubles == [1.5, -2.25, 3.0, 1e10])
        #expect(x.to(.int64).scalars(as: Int64.self) == [1, -2, 3, 10_000_000_000])
        #expect(x.to(.int32).scalars(as: Int32.self)[0...2] == [1, -2, 3])
        #expect(Tensor([Float(1.5), 300, -1]).to(.uint8).scalars(as: UInt8.self) == [1, 255, 0])
        #expect(x.to(.bfloat16).to(.float64).doubles[0...2] == [1.5, -2.25, 3.0])
        #expect(x.to(.float16).to(.float64).doubles[0...2] == [1.5, -2.25, 3.0])
        #expect(BFloat16(Float(1.00390625)).float == 1.0)  // ties round to even
        #expect(BFloat16(Float(3.14159)).float == 3.140625)
        #expect(Tensor([UInt8(0), 128, 255]).to(.float32).floats == [0, 128, 255])
        #expect((Tensor([1.0, 2]) .> 1.5).scalars(as: Bool.self) == [false, true])
        #expect((Tensor([1.0, 2]) .> 1.5).sum().scalars(as: Int64.self) == [1])
    }

    @Test func viewsShareStorageAndCopyOnWrite() {
        let x = Tensor((0..<24).map(Double.init), shape: [2, 3, 4])
        let v = x.reshape([6, 4])
        #expect(v.sharesStorage(with: x))
        let t = x.transpose(1, 2)
        #expect(t.shape == [2, 4, 3] && !t.isContiguous)
        #expect(t[element: [1, 3, 2]] == x[element: [1, 2, 3]])
        #expect(t.reshape([-1]).sharesStorage(with: x) == false)  // needs a copy
        var y = x
        y[0, 0, 0] = Tensor(scalar: 100.0)
        #expect(x[element: [0, 0, 0]] == 0)  // x unchanged: y copied on write
        #expect(y[element: [0, 0, 0]] == 100)
        let s = x[1, 1..<3, TensorIndex.range(0..<4, step: 2)]
        #expect(s.shape == [2, 2] && s.doubles == [16, 18, 20, 22])
        #expect(x[.ellipsis, -1].doubles == [3, 7, 11, 15, 19, 23])
        #expect(x[0, .newAxis].shape == [1, 3, 4])
        #expect(x[(-1)...].shape == [1, 3, 4])
        #expect(x[0].expand([2, 3, 4]).strides == [0, 4, 1])
        #expect(x.unsqueeze(0).squeeze(0).shape == [2, 3, 4] && x.unsqueeze(-1).shape == [2, 3, 4, 1])
        #expect(x.permute([2, 0, 1]).contiguous().shape == [4, 2, 3])
        let cl = Tensor.randn([2, 3, 4, 5]).contiguous(.channelsLast)
        #expect(cl.isChannelsLast && cl.strides == [60, 1, 15, 3])
        #expect(cl.exp().isChannelsLast)  // elementwise ops keep the memory format
        #expect(cl.adaptiveAvgPool2d((1, 1)).flatten(startDim: 1).shape == [2, 3])
    }

    @Test func maxPoolChannelsLastMatchesThePlainLayout() {
        // 11 channels: eight through the vectorised channels-last path, three through the scalar one; ties and NaNs.
        var v = Tensor.randn([2, 11, 9, 7], generator: Generator(seed: 4)).floats.map { ($0 * 2).rounded() / 2 }
        v[5] = .nan; v[300] = .nan; v[301] = .nan
        let plain = Tensor(v, shape: [2, 11, 9, 7])
        for (k, s, p, ceil) in [(3, 2, 1, false), (2, 2, 0, true), (3, 1, 1, false)] {
            let a = plain.requiringGrad(), b = plain.contiguous(.channelsLast).requiringGrad()
            let ya = a.maxPool2d(kernel: k, stride: s, padding: p, ceilMode: ceil)
            let yb = b.maxPool2d(kernel: k, stride: s, padding: p, ceilMode: ceil)
            #expect(yb.isChannelsLast)
            #expect(ya.floats.map(\.bitPattern) == yb.contiguous().floats.map(\.bitPattern))
            let g = Tensor.randn(ya.shape, generator: Generator(seed: 5))
            ya.backward(g)
            yb.backward(g.contiguous(.channelsLast))
            #expect(a.grad!.floats == b.grad!.contiguous().floats)
            // Without gradients (inference) the same values.
            #expect(
                noGrad { plain.contiguous(.channelsLast).maxPool2d(kernel: k, stride: s, padding: p, ceilMode: ceil) }
                    .contiguous().floats.map(\.bitPattern) == ya.floats.map(\.bitPattern))
        }
    }

    @Test func joinSplitPad() {
        let a = Tensor([1.0, 2, 3, 4], shape: [2, 2]), b = Tensor([5.0, 6], shape: [2, 1])
        #expect(Tensor.cat([a, b], dim: 1).doubles == [1, 2, 5, 3, 4, 6])
        #expect(Tensor.stack([a, a], dim: 0).shape == [2, 2, 2])
        #expect(Tensor.cat([a, b], dim: 1).split([2, 1], dim: 1)[1].doubles == [5, 6])
        #expect(Tensor.arange(0, 5).split(size: 2).map(\.count) == [2, 2, 1])
        #expect(Tensor.arange(0, 6).chunk(3).map(\.count) == [2, 2, 2])
        #expect(a.pad([1, 0], value: 9).doubles == [9, 1, 2, 9, 3, 4])
        #expect(a.pad([0, 0, 1, 1]).shape == [4, 2])
    }

    @Test func reductionsAndIndexing() {
        let x = Tensor([3.0, 1, 4, 1, 5, 9], shape: [2, 3])
        #expect(x.sum().item() == 23)
        #expect(x.sum(dim: 0).doubles == [4, 6, 13])
        #expect(x.mean(dim: 1, keepDim: true).shape == [2, 1])
        let (v, i) = x.max(dim: 1)
        #expect(v.doubles == [4, 9] && i.scalars(as: Int64.self) == [2, 2])
        #expect(x.argmin(dim: 1).scalars(as: Int64.self) == [1, 0])
        #expect(x.max().item() == 9 && x.min().item() == 1)
        #expect(abs(x.variance().item() - 8.966666666666667) < 1e-12)
        #expect(x.std(correction: 0).item() > 0)
        #expect(x.gather(dim: 1, index: Tensor([Int64(0), 2, 1, 1], shape: [2, 2])).doubles == [3, 4, 5, 5])
        #expect(x.indexSelect(dim: 0, index: Tensor([Int64(1), 0])).doubles == [1, 5, 9, 3, 1, 4])
        #expect(Tensor([Int64(2), 0]).oneHot(numClasses: 3).scalars(as: Int64.self) == [0, 0, 1, 1, 0, 0])
        #expect(Tensor.where(x .> 2, x, Tensor(scalar: 0.0)).doubles == [3, 0, 4, 0, 5, 9])
        let big = Tensor.ones([300, 1000])
        #expect(big.sum().item() == 300_000)
        #expect(big.sum(dim: 1).doubles.allSatisfy { $0 == 1000 })
    }

    @Test func autogradMechanics() {
        let x = Tensor([1.0, 2, 3]).requiringGrad()
        #expect(x.isLeaf && x.requiresGrad)
        let y = (x * x).sum()
        #expect(y.gradFunction == "sum")
        y.backward(retainGraph: true)
        #expect(x.grad!.doubles == [2, 4, 6])
        y.backward()
        #expect(x.grad!.doubles == [4, 8, 12])  // gradients accumulate
        x.grad = nil
        let z = noGrad { x * 2 }
        #expect(!z.requiresGrad)
        let w = withGrad { noGrad { withGrad { x * 2 } } }
        #expect(w.requiresGrad)
        let h = (x * 3)
        h.retainGrad()
        (h * h).backward(Tensor([1.0, 1, 1]))
        #expect(h.grad!.doubles == [6, 12, 18])
        #expect(x.grad!.doubles == [18, 36, 54])
        #expect(!x.detached().requiresGrad)
        // A shared sub-expression receives the sum of both paths.
        let a = Tensor([2.0]).requiringGrad()
        let b = a * a
        (b + b * a).backward(Tensor([1.0]))
        #expect(a.grad!.doubles == [2 * 2 + 3 * 4])
    }

    @Test func graphIsReleasedAfterBackward() {
        weak var node: GradNode?
        let x = Tensor.randn([10]).requiringGrad()
        do {
            let y = (x.exp() * 2).sum()
            node = y.node?.inputs.first!
            #expect(node != nil)
            y.backward()
            #expect(y.node?.inputs.isEmpty == true)
        }
        #expect(node == nil)
    }

    @Test func descriptionReadsLikePyTorch() {
        let s = Tensor([1.0, 2.5], shape: [2]).to(.float32).description
        #expect(s == "tensor([1.0000, 2.5000], dtype=float32, shape=[2])")
        #expect(Tensor([Int64(3)]).description == "tensor([3], dtype=int64, shape=[1])")
        let big = Tensor.zeros([100, 100]).description
        #expect(big.contains("...") && big.count < 600)
        #expect(Tensor(rows: [[1.0, 2], [3, 4]]).description.contains("],\n        ["))
    }

    @Test func serialLoopsMatchParallelOnes() {
        // Serial through the task-local switch, not by setting the process-wide thread count other tests read.
        let serial = Parallel.$isSerial.withValue(true) { Tensor.ones([1_000_000]).exp().sum().item() }
        let parallel = Tensor.ones([1_000_000]).exp().sum().item()
        #expect(Parallel.threadCount >= 1)
        #expect(abs(serial - parallel) < 1e-9 * serial)
        #expect(abs(serial - 2_718_281.746) < 1.0)  // Float(e) summed a million times: within a few ulps
    }

    /// The thread count is process-wide, so it is set in a child process.
    @Test func threadCountCanBeSet() async {
        await #expect(processExitsWith: .success) {
            Parallel.threadCount = 1
            guard Parallel.threadCount == 1, Tensor.ones([100_000]).sum().item() == 100_000 else {
                fatalError("not set")
            }
            Parallel.threadCount = 0
            guard Parallel.threadCount == 1 else { fatalError("a count under 1 should clamp to 1") }
        }
    }
}

/// The inference kernels pick, per layer, a primitive made for the whole thread team or for one thread (whichever
/// ran faster): both must compute the same values.
@Suite struct TeamOrOneThreadTests {
    @Test func aOneThreadConvolutionComputesWhatTheTeamsDoes() {
        let g = ConvGeometry(n: 1, c: 16, h: 14, w: 14, oc: 32, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, groups: 1)
        let m = g.memoryDescs()
        func build() -> DNNLPrimitive {
            var desc = g.forwardDesc(dnnl_forward_inference, bias: true)
            return DNNLPrimitive(&desc, "test conv")
        }
        let x = Tensor.randn([1, 16, 14, 14], generator: Generator(seed: 3)).contiguous(.channelsLast)
        let w = Tensor.randn([32, 16, 3, 3], generator: Generator(seed: 4)),
            b = Tensor.randn([32], generator: Generator(seed: 5))
        func run(_ p: DNNLPrimitive) -> [Float] {
            let y = Tensor(
                empty: [1, 32, 14, 14], dtype: .float32, strides: Tensor.channelsLastStrides([1, 32, 14, 14]))
            p.execute([
                (DNNL_ARG_SRC, DNNLMemory(m.src).bind(x.rawPointer)),
                (DNNL_ARG_WEIGHTS, p.packWeights(w.rawPointer, user: m.weights)),
                (DNNL_ARG_BIAS, DNNLMemory(m.bias).bind(b.rawPointer)),
                (DNNL_ARG_DST, DNNLMemory(m.dst).bind(y.rawPointer))
            ])
            return y.floats
        }
        let team = run(build()), one = run(Parallel.withOneThread(build))
        #expect(team == one)
        #expect(team.contains { $0 != 0 })
        // The chooser returns one of the two, whichever it is.
        let chosen = DNNLPrimitive.fastestOfTeamOrOne(
            [DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST], build)
        #expect(run(chosen) == team)
    }
}
