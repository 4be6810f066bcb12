import Testing
import Foundation
@testable import SwiftAICore
import SwiftAITestSupport

/// Fast paths chosen by timing on the CPU at hand: the choice itself, and that every path computes the same.
@Suite struct PathChoiceTests {
    @Test func theFasterCandidateIsChosenOnceAndKept() {
        let choice = PathChoice<String>("test", rounds: 2)
        var calls = [0, 0]
        let
            slow = {
                calls[0] += 1; usleep(2_000)
            }, fast = { calls[1] += 1 }
        #expect(choice.choice("k") == nil)
        let run = { (i: Int) in i == 0 ? slow() : fast() }
        #expect(choice.choose("k", count: 2, run) == 1)
        #expect(calls == [3, 3])  // a warm-up and two timed rounds each, alternately
        #expect(choice.choose("k", count: 2, run) == 1 && calls == [3, 3] && choice.choice("k") == 1)
        #expect(choice.choose("other", count: 2) { i in i == 0 ? fast() : slow() } == 0)
    }

    /// Each path a training convolution may take here (small-map GEMMs, oneDNN float32, oneDNN bf16 where this CPU
    /// has the kernels) gives the same output and gradients, so the timed choice never changes results beyond rounding.
    @Test func everyTrainingConvolutionPathComputesTheSame() {
        let g = ConvGeometry(n: 16, c: 32, h: 7, w: 7, oc: 24, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, groups: 1)
        #expect(SmallMapConv.applies(g))
        let x = randn([16, 32, 7, 7], seed: 1).to(.float32).contiguous(.channelsLast)
        let w = randn([24, 32, 3, 3], seed: 2, scale: 0.1).to(.float32), b = randn([24], seed: 3).to(.float32)
        let dy = randn([16, 24, 7, 7], seed: 4).to(.float32).contiguous(.channelsLast)
        func run(_ p: ConvPath) -> [Tensor] {
            let (y, source) = Tensor.convForward(x, w, b, g, p)
            let (dx, dw, db) = Tensor.convBackward(source, w, dy, g, needX: true, needW: true, needB: true, path: p)
            return [y, dx!, dw!, db!]
        }
        let want = run(.dnnl(.float32)), names = ["y", "dx", "dw", "db"]
        for (i, got) in run(.smallMap).enumerated() {
            expectClose(got, want[i], rtol: 1e-4, atol: 1e-4, "small map \(names[i])")
        }
        if CPUFeatures.lowPrecisionKernels(.bfloat16) == .native {
            for (i, got) in run(.dnnl(.bfloat16)).enumerated() {
                expectClose(got, want[i], rtol: 5e-2, atol: 0.3, "bf16 \(names[i])")
            }
        }
    }
}
