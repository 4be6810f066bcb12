import CDNNL
import Foundation

// Mixed precision on the CPU (issue #12): convolutions and linear layers can take bfloat16 (or float16) operands
// through oneDNN, accumulating and returning float32. Which CPUs run that natively is decided here, at run time.

/// What this CPU can compute natively, as far as mixed precision is concerned.
public enum CPUFeatures {
    /// The CPU's instruction-set flags (`/proc/cpuinfo`), empty where they cannot be read.
    public static let flags: Set<String> = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return Set(line.split(separator: ":").last!.split(separator: " ").map(String.init))
    }()

    /// The instruction set oneDNN dispatches to (e.g. `avx2`, `avx512_core_bf16`, `avx512_core_amx`).
    public static let isa: String = {
        switch dnnl_get_effective_cpu_isa().rawValue {
        case dnnl_cpu_isa_sse41.rawValue: return "sse41"
        case dnnl_cpu_isa_avx.rawValue: return "avx"
        case dnnl_cpu_isa_avx2.rawValue: return "avx2"
        case dnnl_cpu_isa_avx2_vnni.rawValue: return "avx2_vnni"
        case dnnl_cpu_isa_avx512_core.rawValue: return "avx512_core"
        case dnnl_cpu_isa_avx512_core_vnni.rawValue: return "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core_bf16.rawValue: return "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_amx.rawValue: return "avx512_core_amx"
        case let v: return "isa 0x\(String(v, radix: 16))"
        }
    }()

    /// Native bfloat16 dot products: `avx512_bf16` (Cooper Lake, Zen 4, Sapphire Rapids) or AMX-BF16.
    public static var nativeBF16: Bool { flags.contains("avx512_bf16") || flags.contains("amx_bf16") }

    /// Native float16 arithmetic: `avx512_fp16` (Sapphire Rapids).
    public static var nativeFP16: Bool { flags.contains("avx512_fp16") }

    /// Whether the oneDNN this build links creates `dtype` convolution and matmul primitives (float32
    /// accumulation and output). oneDNN 2.6 has bfloat16 kernels from `avx512_core` up and no float16 ones on x86.
    public static func hasKernels(_ dtype: DType) -> Bool {
        switch dtype {
        case .float32: return true
        case .bfloat16: return bf16Kernels
        case .float16: return f16Kernels
        default: return false
        }
    }

    private static let bf16Kernels = probe(dnnl_bf16)
    private static let f16Kernels = probe(dnnl_f16)

    /// Tries to create a small convolution and a matmul taking `type` operands.
    private static func probe(_ type: dnnl_data_type_t) -> Bool {
        var s = DNNL.desc([2, 8, 6, 6], tag: dnnl_nhwc, type),
            w = DNNL.desc([8, 8, 3, 3], tag: dnnl_format_tag_any, type)
        var d = DNNL.desc([2, 8, 6, 6], tag: dnnl_nhwc)
        var st: [Int64] = [1, 1], pad: [Int64] = [1, 1]
        var conv = dnnl_convolution_desc_t()
        guard
            dnnl_convolution_forward_desc_init(
                &conv, dnnl_forward_training, dnnl_convolution_direct, &s, &w, nil, &d,
                &st, &pad, &pad) == dnnl_success
        else { return false }
        var a = DNNL.desc([4, 8], tag: dnnl_ab, type), b = DNNL.desc([8, 4], tag: dnnl_ab, type),
            c = DNNL.desc([4, 4], tag: dnnl_ab)
        var mm = dnnl_matmul_desc_t()
        guard dnnl_matmul_desc_init(&mm, &a, &b, nil, &c) == dnnl_success else { return false }
        return creates(&conv) && creates(&mm)
    }

    /// Whether oneDNN creates a primitive for the op descriptor at `desc` (valid for this call only).
    private static func creates(_ desc: UnsafeRawPointer) -> Bool {
        var pd: dnnl_primitive_desc_t? = nil
        guard dnnl_primitive_desc_create(&pd, desc, nil, DNNL.engine, nil) == dnnl_success else { return false }
        dnnl_primitive_desc_destroy(pd)
        return true
    }

    /// Whether low-precision products take the reference path whatever the CPU (`SWIFTAI_LOW_PRECISION=reference`,
    /// read once at start-up): operands rounded to bfloat16/float16, float32 kernels. Tests and CI use it to run mixed
    /// precision's plumbing on CPUs without bf16 kernels; it is as slow as float32 and never chosen silently.
    public static let referenceForced = ProcessInfo.processInfo.environment["SWIFTAI_LOW_PRECISION"] == "reference"

    /// How products in `dtype` run here: natively (oneDNN's bf16 kernels), on the forced reference path, or not at
    /// all (nil: see ``lowPrecisionUnavailable(_:)``).
    public static func lowPrecisionKernels(_ dtype: DType) -> LowPrecisionKernels? {
        guard dtype == .bfloat16 || dtype == .float16 else { return nil }
        if referenceForced { return .reference }
        let native = dtype == .bfloat16 ? nativeBF16 : nativeFP16
        return native && hasKernels(dtype) ? .native : nil
    }

    /// `nil` when convolutions and linear layers can compute in `dtype` (`.bfloat16` or `.float16`) at native speed
    /// here (or on the forced reference path); otherwise the one-line reason, e.g. "bf16 needs avx512_bf16 or AMX;
    /// this CPU (avx2) has neither".
    public static func lowPrecisionUnavailable(_ dtype: DType) -> String? {
        if referenceForced && (dtype == .bfloat16 || dtype == .float16) { return nil }
        switch dtype {
        case .bfloat16:
            if !nativeBF16 { return "bf16 needs avx512_bf16 or AMX; this CPU (\(isa)) has neither" }
            if !hasKernels(.bfloat16) {
                return "this CPU (\(isa)) has avx512_bf16 but the linked oneDNN has no bf16 convolution for it"
            }
            return nil
        case .float16:
            if !nativeFP16 { return "fp16 needs avx512_fp16; this CPU (\(isa)) has none" }
            if !hasKernels(.float16) {
                return
                    """
                    this CPU (\(isa)) has avx512_fp16 but the linked oneDNN (2.6) has no fp16 convolution for x86 \
                    (bf16 works here)
                    """
            }
            return nil
        default:
            return "\(dtype) is not a low-precision compute type (use bfloat16 or float16)"
        }
    }
}

/// Mixed precision as a context the ops consult (PyTorch's `torch.autocast`): inside ``autocast(_:_:)`` convolutions
/// of float32 operands compute in ``precision`` where it measures faster, linear layers and matrix products always
/// (float32 accumulation, results and gradients), and under bfloat16 the activations ops keep for their backward pass
/// after such a convolution are kept in bfloat16. Task- and thread-local, so a user-written module calling the ops
/// gets it as the built-in layers do.
public enum Autocast {
    /// One ``autocast(_:_:)`` scope: its precision, and what the last convolution ran in.
    final class Scope: @unchecked Sendable {
        let precision: DType
        /// Whether the last convolution ran in low precision: the activations saved until the next one are then kept
        /// in bfloat16. Layers whose convolution measured faster in float32 pay no casts.
        var lowPrecisionActivations = false

        init(_ precision: DType) { self.precision = precision }
    }

    @TaskLocal static var scope: Scope?

    /// `.float32` (off), `.bfloat16` or `.float16`.
    public static var precision: DType { scope?.precision ?? .float32 }
}

/// Runs `body` with ``Autocast/precision`` set to `precision`; the caller checks
/// ``CPUFeatures/lowPrecisionUnavailable(_:)`` first.
public func autocast<R>(_ precision: DType, _ body: () throws -> R) rethrows -> R {
    try Autocast.$scope.withValue(precision == .float32 ? nil : Autocast.Scope(precision)) { try body() }
}

/// What an op keeps of an activation for its backward pass: the tensor, or under a bfloat16 ``Autocast`` after a
/// low-precision convolution a bfloat16 copy of a float32 one (same layout; half the memory until the backward pass
/// reads it back as float32).
struct SavedActivation {
    private let stored: Tensor
    private let compressed: Bool

    init(_ x: Tensor) {
        let d = x.detached()
        let scope = Autocast.scope
        compressed =
            d.dtype == .float32 && d.count > 0 && scope?.precision == .bfloat16
            && scope!.lowPrecisionActivations
        stored = compressed ? d.to(.bfloat16) : d
    }

    /// `x` kept as it is, whatever the context.
    init(exactly x: Tensor) {
        stored = x.detached()
        compressed = false
    }

    /// The activation, in its original type.
    var tensor: Tensor { compressed ? stored.to(.float32) : stored }
}

/// Where low-precision products run.
public enum LowPrecisionKernels: Sendable {
    /// oneDNN's bfloat16 (float16) kernels, float32 accumulation.
    case native
    /// The same arithmetic on any CPU: operands rounded to the low-precision type, float32 kernels.
    case reference
}

/// oneDNN kernels for the low-precision path: casts (reorders) and matrix products with float32 results.
enum LowPrecision {
    static func dnnlType(_ dtype: DType) -> dnnl_data_type_t {
        switch dtype {
        case .bfloat16: return dnnl_bf16
        case .float16: return dnnl_f16
        default: return dnnl_f32
        }
    }

    /// The kernels `op` uses for `dtype`; asking for a precision that cannot run here is a programmer error.
    static func kernels(_ dtype: DType, _ op: String) -> LowPrecisionKernels {
        guard let k = CPUFeatures.lowPrecisionKernels(dtype) else {
            fatalError(
                "\(op): no \(dtype) kernels on this CPU (\(CPUFeatures.isa)); "
                    + "check CPUFeatures.lowPrecisionUnavailable first")
        }
        return k
    }

    /// The reference path of a product `op(x, w, b)`: the operands rounded to `dtype` (gradients passed straight
    /// through) and the output gradient rounded on its way back, around float32 kernels — the arithmetic of the
    /// native kernels (float32 accumulation of `dtype` products), on any CPU.
    static func reference(
        _ x: Tensor, _ w: Tensor, _ b: Tensor?, _ dtype: DType,
        _ op: (Tensor, Tensor, Tensor?) -> Tensor
    ) -> Tensor {
        op(x.roundedStraightThrough(dtype), w.roundedStraightThrough(dtype), b).roundingGradient(dtype)
    }

    private static let casts = KernelCache<DNNLPrimitive>()
    private static let products = KernelCache<DNNLPrimitive>()

    /// A contiguous `dtype` copy of the float32 matrix (or batch of matrices) `t` (any non-zero strides).
    static func cast(_ t: Tensor, to dtype: DType) -> Tensor {
        precondition(t.dtype == .float32 && (t.rank == 2 || t.rank == 3))
        let out = Tensor(empty: t.shape, dtype: dtype)
        let from = DNNL.desc(t.shape, strides: t.strides),
            to = DNNL.desc(t.shape, strides: Tensor.contiguousStrides(t.shape), dnnlType(dtype))
        let r = casts.get("\(t.shape)|\(t.strides)|\(dtype)") { DNNLPrimitive(reorderFrom: from, to: to) }
        r.execute([
            (DNNL_ARG_FROM, DNNLMemory(from).bind(t.rawPointer)), (DNNL_ARG_TO, DNNLMemory(to).bind(out.rawPointer))
        ])
        return out
    }

    /// `a · b (+ bias)` for float32 matrices `a` `[m, k]` and `b` `[k, n]`, or batches of them (`[batch, m, k]`,
    /// `[batch, k, n]`, no bias), of any non-zero strides, computed on `dtype` copies with float32 accumulation; the
    /// result is a contiguous float32 `[m, n]` (`[batch, m, n]`).
    static func matmul(_ a: Tensor, _ b: Tensor, bias: Tensor? = nil, _ dtype: DType) -> Tensor {
        precondition(a.rank == b.rank && a.shape.dropLast(2) == b.shape.dropLast(2) && (a.rank == 2 || bias == nil))
        let batch = Array(a.shape.dropLast(2))
        let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1], n = b.shape[b.rank - 1]
        let la = cast(a, to: dtype), lb = cast(b, to: dtype)
        let y = Tensor(empty: batch + [m, n], dtype: .float32)
        let t = dnnlType(dtype), tag = batch.isEmpty ? dnnl_ab : dnnl_abc
        let (ad, bd, yd, biasd) = (
            DNNL.desc(batch + [m, k], tag: tag, t), DNNL.desc(batch + [k, n], tag: tag, t),
            DNNL.desc(batch + [m, n], tag: tag), DNNL.desc([1, n], tag: dnnl_ab)
        )
        let p = products.get("\(batch)\(m),\(k),\(n)|\(dtype)|\(bias != nil)") {
            var (sa, sb, sy, sbias) = (ad, bd, yd, biasd)
            var desc = dnnl_matmul_desc_t()
            withUnsafePointer(to: &sbias) { bp in
                DNNL.check(dnnl_matmul_desc_init(&desc, &sa, &sb, bias != nil ? bp : nil, &sy), "matmul desc")
            }
            return DNNLPrimitive(&desc, "\(dtype) matmul")
        }
        let bc = bias?.contiguous()
        var args: [(Int32, DNNLMemory)] = [
            (DNNL_ARG_SRC, DNNLMemory(ad).bind(la.rawPointer)),
            (DNNL_ARG_WEIGHTS, DNNLMemory(bd).bind(lb.rawPointer)),
            (DNNL_ARG_DST, DNNLMemory(yd).bind(y.rawPointer))
        ]
        if let bc { args.append((DNNL_ARG_BIAS, DNNLMemory(biasd).bind(bc.rawPointer))) }
        withExtendedLifetime((la, lb, bc)) { p.execute(args) }
        return y
    }
}

extension Tensor {
    /// float32 values rounded to `dtype` (and back), the gradient passed unchanged.
    func roundedStraightThrough(_ dtype: DType) -> Tensor {
        var y = detached().to(dtype).to(.float32)
        if Tensor.needsGrad(self) { y.recordGrad("round_\(dtype)", [self]) { g in [g] } }
        return y
    }

    /// The identity, whose gradient is rounded to `dtype` on its way back.
    func roundingGradient(_ dtype: DType) -> Tensor {
        guard Tensor.needsGrad(self) else { return self }
        var y = detached()
        y.recordGrad("round_grad_\(dtype)", [self]) { g in [g.to(dtype).to(.float32)] }
        return y
    }
}
