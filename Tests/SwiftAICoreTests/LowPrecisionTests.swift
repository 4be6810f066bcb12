import Testing
import SwiftAICore
import SwiftAITestSupport

/// Mixed precision's kernels: bfloat16 operands, float32 accumulation and results. The numeric tests need oneDNN's
/// bf16 kernels (avx512_core or newer) and are skipped elsewhere, naming the CPU's instruction set.
@Suite struct LowPrecisionTests {
    static let bf16Kernels = CPUFeatures.hasKernels(.bfloat16)
    static let skipReason = Comment(
        rawValue: "oneDNN's bf16 kernels need avx512_bf16; this CPU's ISA is \(CPUFeatures.isa) "
            + "(SWIFTAI_LOW_PRECISION=reference runs these tests on the reference path)")

    @Test(.enabled(if: !CPUFeatures.referenceForced, "SWIFTAI_LOW_PRECISION=reference makes every CPU compute bf16"))
    func availabilityFollowsTheCPU() {
        let bf16 = CPUFeatures.lowPrecisionUnavailable(.bfloat16)
        #expect((bf16 == nil) == (CPUFeatures.nativeBF16 && Self.bf16Kernels))
        #expect(
            CPUFeatures.nativeBF16
                == (CPUFeatures.flags.contains("avx512_bf16") || CPUFeatures.flags.contains("amx_bf16")))
        if let bf16 { #expect(bf16.contains(CPUFeatures.isa), "\(bf16)") }
        // oneDNN 2.6 runs bf16 from avx512_core up, never on AVX2.
        if CPUFeatures.isa.hasPrefix("avx2") || !CPUFeatures.flags.contains("avx512f") {
            #expect(!Self.bf16Kernels && bf16 != nil)
        }
        // It has no float16 kernels for x86 at all, so float16 is refused with a reason everywhere.
        #expect(!CPUFeatures.hasKernels(.float16) && CPUFeatures.lowPrecisionUnavailable(.float16) != nil)
        #expect(CPUFeatures.lowPrecisionUnavailable(.float32) != nil)
    }

    @Test(
        .enabled(
            if: !bf16Kernels && !CPUFeatures.referenceForced,
            "bf16 kernels (or the forced reference path) exist here"))
    func requestingMissingKernelsNamesTheISA() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([1, 2, 4, 4]).conv2d(weight: Tensor.ones([2, 2, 3, 3]), precision: .bfloat16)
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains("conv2d: no bfloat16 kernels on this CPU (\(CPUFeatures.isa))"), "\(err)")
    }

    /// float32 normal values (mixed precision takes float32 operands).
    func randn32(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
        randn(shape, seed: seed, scale: scale).to(.float32)
    }

    /// `t` rounded to bfloat16 and back.
    func rounded(_ t: Tensor) -> Tensor { t.to(.bfloat16).to(.float32) }

    @Test(.enabled(if: CPUFeatures.lowPrecisionKernels(.bfloat16) != nil, skipReason))
    func bf16ConvolutionMatchesFloat32OnRoundedOperands() {
        let x = randn32([2, 8, 9, 9], seed: 1).requiringGrad()
        let w = randn32([16, 8, 3, 3], seed: 2, scale: 0.2).requiringGrad()
        let b = randn32([16], seed: 3).requiringGrad(), r = randn32([2, 16, 5, 5], seed: 4)
        let y = x.conv2d(weight: w, bias: b, stride: 2, padding: 1, precision: .bfloat16)
        #expect(y.dtype == .float32)
        (y * r).sum().backward()
        // The reference: float32 convolution of the bf16-rounded operands (the output gradient is rounded too).
        let xr = rounded(x.detached()), wr = rounded(w.detached())
        expectClose(
            y, xr.conv2d(weight: wr, bias: b.detached(), stride: 2, padding: 1), rtol: 1e-4, atol: 1e-4, "forward")
        expectClose(
            x.grad!,
            Tensor.conv2dInputGrad(gradOutput: rounded(r), weight: wr, inputShape: x.shape, stride: 2, padding: 1),
            rtol: 1e-4, atol: 1e-4, "dx")
        expectClose(
            w.grad!,
            Tensor.conv2dWeightGrad(input: xr, gradOutput: rounded(r), weightShape: w.shape, stride: 2, padding: 1),
            rtol: 1e-4, atol: 1e-3, "dw")
        expectClose(b.grad!, rounded(r).sum(dims: [0, 2, 3]), rtol: 1e-4, atol: 1e-4, "db")  // of the rounded dy
        #expect(w.grad!.dtype == .float32 && x.grad!.dtype == .float32)
    }

    @Test(.enabled(if: CPUFeatures.lowPrecisionKernels(.bfloat16) != nil, skipReason))
    func bf16LinearMatchesFloat32OnRoundedOperands() {
        let x = randn32([5, 3, 12], seed: 5).requiringGrad(), w = randn32([7, 12], seed: 6, scale: 0.3).requiringGrad()
        let b = randn32([7], seed: 7).requiringGrad(), r = randn32([5, 3, 7], seed: 8)
        let y = x.linear(weight: w, bias: b, precision: .bfloat16)
        #expect(y.shape == [5, 3, 7] && y.dtype == .float32)
        (y * r).sum().backward()
        let xr = rounded(x.detached()), wr = rounded(w.detached()), rr = rounded(r)
        expectClose(y, xr.linear(weight: wr, bias: b.detached()), rtol: 1e-4, atol: 1e-4, "forward")
        expectClose(x.grad!, rr.matmul(wr), rtol: 1e-4, atol: 1e-4, "dx")
        expectClose(
            w.grad!, rr.reshape([-1, 7]).transpose(0, 1).matmul(xr.reshape([-1, 12])), rtol: 1e-4, atol: 1e-3, "dw")
        expectClose(b.grad!, rr.reshape([-1, 7]).sum(dims: [0]), rtol: 1e-4, atol: 1e-4, "db")
    }

    @Test(.enabled(if: CPUFeatures.lowPrecisionKernels(.bfloat16) != nil, skipReason))
    func bf16MatmulMatchesFloat32OnRoundedOperands() {
        // Broadcast batches, one right-hand matrix (a transposed view), a broadcast row.
        let cases = [([2, 3, 5, 12], [3, 12, 7], false), ([4, 5, 12], [7, 12], true), ([1, 12], [3, 12, 7], false)]
        for (sa, sb, tb) in cases {
            let a = randn32(sa, seed: 9).requiringGrad(), b0 = randn32(sb, seed: 10, scale: 0.3).requiringGrad()
            let b = tb ? b0.transpose(0, 1) : b0, y = a.matmul(b, precision: .bfloat16)
            let r = randn32(y.shape, seed: 11)
            (y * r).sum().backward()
            let ar = rounded(a.detached()), br = rounded(b.detached()), rr = rounded(r)
            expectClose(y, ar.matmul(br), rtol: 1e-4, atol: 1e-4, "forward \(sa)·\(sb)")
            expectClose(a.grad!, rr.matmul(br.transpose(-1, -2)).sumToShape(sa), rtol: 1e-4, atol: 1e-4, "da \(sa)")
            let db = ar.transpose(-1, -2).matmul(rr).sumToShape(b.shape)
            expectClose(b0.grad!, tb ? db.transpose(0, 1) : db, rtol: 1e-4, atol: 1e-3, "db \(sb)")
        }
    }

    @Test(.enabled(if: CPUFeatures.lowPrecisionKernels(.bfloat16) != nil, skipReason))
    func matmulConsultsAutocastAndObeysAnExplicitPrecision() {
        let a = randn32([3, 4, 16], seed: 12), b = randn32([16, 5], seed: 13), v = randn32([16], seed: 14)
        let (auto, vector, explicit, double) = autocast(.bfloat16) {
            (a.matmul(b), v.matmul(b), a.matmul(b, precision: .float32), a.to(.float64).matmul(b.to(.float64)))
        }
        expectClose(auto, a.matmul(b, precision: .bfloat16), rtol: 0, atol: 0, "autocast")
        expectClose(vector, v.matmul(b, precision: .bfloat16), rtol: 0, atol: 0, "vector")
        expectClose(explicit, a.matmul(b), rtol: 0, atol: 0, "explicit float32")
        expectClose(double, a.to(.float64).matmul(b.to(.float64)), rtol: 0, atol: 0, "float64")
        #expect(!closeness(auto, explicit, rtol: 1e-5, atol: 1e-5).ok)
        // An explicit float32 product keeps float32 gradients under autocast.
        let x = a.requiringGrad(), w = b.requiringGrad()
        autocast(.bfloat16) { x.matmul(w, precision: .float32).sum().backward() }
        expectClose(x.grad!, Tensor.ones([3, 4, 5]).matmul(b.transpose(0, 1)), rtol: 1e-6, atol: 1e-6, "float32 grad")
    }
}
