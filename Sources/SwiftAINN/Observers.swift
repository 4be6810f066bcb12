import SwiftAICore

// The two sources of a quantized model's values: observers on a fused float model during calibration, and the
// tensors of an int8 export bundle (checked before use).

/// The range of one activation: minimum and maximum, then (histogram observer) a histogram over that range.
final class RangeStat {
    var lo = Float.infinity, hi = -Float.infinity
    var bins: [Double]? = nil
    static let binCount = 2048

    func observe(_ t: Tensor) {
        let x = t.detached().to(.float32).contiguous(t.rank == 4 ? .channelsLast : .contiguous)
        let p = x.pointer(Float.self), n = x.count
        if var h = bins {
            let width = (hi - lo) / Float(Self.binCount)
            let inv = width > 0 ? 1 / width : 0
            for i in 0..<n where p[i].isFinite {
                h[Swift.min(Swift.max(Int((p[i] - lo) * inv), 0), Self.binCount - 1)] += 1
            }
            bins = h
        } else {
            var a = lo, b = hi
            for i in 0..<n where p[i].isFinite {
                a = Swift.min(a, p[i])
                b = Swift.max(b, p[i])
            }
            (lo, hi) = (a, b)
        }
    }

    /// PyTorch's rule with the min-max range, or the histogram's clipped range.
    func params(_ kind: ActivationObserver, qmax: Int32) -> QParams? {
        guard lo <= hi else { return nil }
        guard kind == .histogram, let h = bins, hi > lo else { return QParams(min: lo, max: hi, qmax: qmax) }
        let (a, b) = Self.bestRange(h, lo: lo, hi: hi, qmax: qmax)
        return QParams(min: a, max: b, qmax: qmax)
    }

    /// PyTorch's `HistogramObserver` search: trims bins from the end holding less of the mass, one 10⁻⁵ quantile
    /// step at a time, while the expected squared quantization error (δ²/12 inside the range, the squared distance
    /// to it outside) keeps falling.
    static func bestRange(_ h: [Double], lo: Float, hi: Float, qmax: Int32) -> (Float, Float) {
        let n = h.count, width = Double(hi - lo) / Double(n)
        var cum = [Double](repeating: 0, count: n)
        var total = 0.0
        for i in 0..<n { total += h[i]; cum[i] = total }
        func error(_ s: Int, _ e: Int) -> Double {
            let a = Double(lo) + Double(s) * width, b = Double(lo) + Double(e + 1) * width
            let delta = (Swift.max(b, 0) - Swift.min(a, 0)) / Double(qmax)
            var err = 0.0
            for i in 0..<n where h[i] > 0 {
                let c = Double(lo) + (Double(i) + 0.5) * width
                err += h[i] * (c < a ? (a - c) * (a - c) : c > b ? (c - b) * (c - b) : delta * delta / 12)
            }
            return err
        }
        var (start, end) = (0, n - 1)
        var best = error(start, end)
        var (alpha, beta) = (0.0, 1.0)
        let step = 1e-5
        var (l, r) = (start, end)  // only move inwards as the quantiles do: one pass over the bins in all
        while alpha < beta {
            alpha += step
            beta -= step
            (l, r) = (Swift.min(Swift.max(l, start), end), Swift.max(Swift.min(r, end), start))
            while l < end && cum[l] < alpha * total { l += 1 }
            while r > start && cum[r] > beta * total { r -= 1 }
            let (s, e) = (l - start) > (end - r) ? (l, end) : (start, r)
            if s == start && e == end { continue }
            let err = error(s, e)
            if err > best { break }
            (best, start, end) = (err, s, e)
        }
        return (lo + Float(Double(start) * width), lo + Float(Double(end + 1) * width))
    }
}

/// Observers hooked onto a fused model: the input and output of every fused convolution and residual block, the
/// output of every shortcut, the input of every linear layer.
final class Observers: QuantizationValues {
    let kind: ActivationObserver
    let qmax: Int32
    private var stats: [String: RangeStat] = [:]
    private var handles: [HookHandle] = []

    init(_ fused: Module, observer: ActivationObserver, qmax: Int32) {
        kind = observer
        self.qmax = qmax
        var watched: [Module] = []
        for m in fused.modules() {
            if m is FusedConv2d || m is FusedResidual || m is Linear { watched.append(m) }
            if let r = m as? FusedResidual { watched.append(r.shortcut) }
        }
        for m in watched {
            let (i, o) = (RangeStat(), RangeStat())
            stats[Self.key(m, output: false)] = i
            stats[Self.key(m, output: true)] = o
            handles.append(
                m.registerForwardHook { _, x, y in
                    i.observe(x)
                    o.observe(y)
                })
        }
    }

    static func key(_ m: Module, output: Bool) -> String { "\(ObjectIdentifier(m).hashValue)\(output ? ">" : "<")" }

    /// Switches every observer from ranges to histograms over them (the histogram observer's second pass).
    func startHistograms() {
        for s in stats.values where s.lo <= s.hi { s.bins = [Double](repeating: 0, count: RangeStat.binCount) }
    }

    func remove() { handles.forEach { $0.remove() } }

    func activation(_ key: String, of module: Module, output: Bool) throws -> QParams {
        guard let p = stats[Self.key(module, output: output)]?.params(kind, qmax: qmax) else {
            throw QuantizationError.invalid(
                "no calibration data reached '\(key)' (run at least one batch through the model)")
        }
        return p
    }

}

extension QuantizationValues {
    /// This host's (calibration and quantization-aware training build the model where it runs).
    var kernelQMax: Int32 { Quantization.activationQMax }

    /// The model's own weights, per-channel int8 (calibration and quantization-aware training).
    func conv(_ name: String, _ fused: FusedConv2d) throws -> (weight: Tensor, scales: Tensor, bias: Tensor) {
        guard fused.conv.weight.allFinite && fused.conv.bias.allFinite else {
            throw QuantizationError.invalid(
                """
                '\(name)' has NaN or infinite weights once its BatchNorm is folded in (check the model's weights and \
                running statistics); it cannot be quantized
                """
            )
        }
        let q = Quantization.quantizePerChannel(fused.conv.weight)
        return (q.weight, q.scales, fused.conv.bias)
    }

    func linear(_ name: String, _ linear: Linear) throws -> (weight: Tensor, scales: Tensor, bias: Tensor?) {
        guard linear.weight.value.allFinite && (linear.bias?.value.allFinite ?? true) else {
            throw QuantizationError.invalid("'\(name)' has NaN or infinite weights; it cannot be quantized")
        }
        let q = Quantization.quantizePerChannel(linear.weight.value)
        return (q.weight, q.scales, linear.bias?.value.detached().to(.float32))
    }
}

/// The values of an int8 export bundle, each checked for name, dtype, shape and range when asked for.
struct StoredValues: QuantizationValues {
    let tensors: [String: Tensor]
    /// The largest code the stored activations use (127 or 255).
    let qmax: Int32
    /// The largest input code the int8 kernels take without overflow; wider layers compute in float32.
    let kernelQMax: Int32

    func tensor(_ key: String, _ dtype: DType, _ shape: [Int]) throws -> Tensor {
        guard let t = tensors[key] else { throw QuantizationError.invalid("tensor '\(key)' \(shape) is missing") }
        guard t.dtype == dtype, t.shape == shape else {
            throw QuantizationError.invalid(
                "tensor '\(key)' is \(t.dtype) \(t.shape), the quantized model needs \(dtype) \(shape)")
        }
        return t
    }

    func activation(_ key: String, of module: Module, output: Bool) throws -> QParams {
        let s = try tensor(key + ".scale", .float32, [1]).floats[0]
        let z = try tensor(key + ".zero_point", .int64, [1]).scalars(as: Int64.self)[0]
        guard let q = QParams(scale: s, zeroPoint: Int32(clamping: z), qmax: qmax), Int64(Int32(clamping: z)) == z
        else {
            throw QuantizationError.invalid(
                "'\(key).scale' \(s) and '\(key).zero_point' \(z) are not a quantization "
                    + "(the scale must be finite and positive, the zero point in 0…\(qmax))")
        }
        return q
    }

    func weights(_ name: String, _ shape: [Int], bias: Bool) throws -> (weight: Tensor, scales: Tensor, bias: Tensor?) {
        let w = try tensor(name + ".weight", .int8, shape)
        let s = try tensor(name + ".weight_scale", .float32, [shape[0]])
        guard s.floats.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw QuantizationError.invalid("'\(name).weight_scale' holds a scale that is not finite and positive")
        }
        let b = bias ? try tensor(name + ".bias", .float32, [shape[0]]) : nil
        guard b?.floats.allSatisfy(\.isFinite) ?? true else {
            throw QuantizationError.invalid("'\(name).bias' is not finite")
        }
        return (w, s, b)
    }

    func conv(_ name: String, _ fused: FusedConv2d) throws -> (weight: Tensor, scales: Tensor, bias: Tensor) {
        let v = try weights(name, fused.conv.weight.shape, bias: true)
        return (v.weight, v.scales, v.bias!)
    }

    func linear(_ name: String, _ linear: Linear) throws -> (weight: Tensor, scales: Tensor, bias: Tensor?) {
        try weights(name, linear.weight.shape, bias: linear.bias != nil)
    }

    /// The float layers' tensors, checked against the model's (`expected`), converted to their dtypes.
    func floats(expected: [String: Tensor]) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (key, want) in expected {
            guard let t = tensors[key] else {
                throw QuantizationError.invalid("tensor '\(key)' \(want.shape) is missing")
            }
            guard t.shape == want.shape, t.dtype.isFloatingPoint == want.dtype.isFloatingPoint else {
                throw QuantizationError.invalid(
                    "tensor '\(key)' is \(t.dtype) \(t.shape), the model needs \(want.dtype) \(want.shape)")
            }
            out[key] = t.to(want.dtype)
        }
        return out
    }
}
