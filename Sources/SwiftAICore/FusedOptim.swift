// Fused optimizer updates: one pass over a parameter instead of a dozen elementwise ops and temporaries.
// On small models the tensor-expression form of Adam is dominated by per-op overhead (allocation, dispatch),
// not arithmetic; the arithmetic here is the same, in the same order, in Float32.

extension Tensor {
    /// One Adam/AdamW step for a Float32 parameter: returns the new weight, first and second moments.
    ///
    /// `weight`, `grad`, `expAvg` and `expAvgSq` must be contiguous Float32 tensors of one shape; otherwise the
    /// result is `nil` and the caller falls back to tensor ops. Inputs are never written (snapshots of optimizer
    /// state, as `lrFind` takes, stay valid). The arithmetic follows PyTorch's `adam`/`adamw`:
    /// decay (`w·(1 − lr·wd)` when `decoupled`, else `g + w·wd`), `m = β₁m + (1 − β₁)g`,
    /// `v = β₂v + (1 − β₂)g²`, `w − lr/bc₁ · m / (√v/√bc₂ + eps)`.
    public static func fusedAdamStep(
        weight: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor,
        lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double,
        decoupled: Bool, biasCorrection1: Double, biasCorrection2: Double
    )
        -> (weight: Tensor, expAvg: Tensor, expAvgSq: Tensor)?
    {
        let all = [weight, grad, expAvg, expAvgSq]
        guard all.allSatisfy({ $0.dtype == .float32 && $0.isContiguous && $0.shape == weight.shape }) else {
            return nil
        }
        let n = weight.count
        let w2 = Tensor(empty: weight.shape, dtype: .float32)
        let m2 = Tensor(empty: weight.shape, dtype: .float32)
        let v2 = Tensor(empty: weight.shape, dtype: .float32)
        let pw = weight.pointer(Float.self), pg = grad.pointer(Float.self)
        let pm = expAvg.pointer(Float.self), pv = expAvgSq.pointer(Float.self)
        let ow = w2.pointer(Float.self), om = m2.pointer(Float.self), ov = v2.pointer(Float.self)
        let decay = Float(1 - lr * weightDecay), l2 = Float(weightDecay)
        let b1 = Float(beta1), c1 = Float(1 - beta1), b2 = Float(beta2), c2 = Float(1 - beta2)
        let sqrtBC2 = Float(biasCorrection2.squareRoot()), e = Float(eps), stepSize = Float(lr / biasCorrection1)
        let useDecay = weightDecay != 0
        Parallel.forEachChunk(n) { r in
            for i in r {
                var w = pw[i], g = pg[i]
                if useDecay { if decoupled { w = w * decay } else { g = g + w * l2 } }
                let m = pm[i] * b1 + g * c1
                let v = pv[i] * b2 + g * g * c2
                om[i] = m
                ov[i] = v
                ow[i] = w - m / (v.squareRoot() / sqrtBC2 + e) * stepSize
            }
        }
        return (w2, m2, v2)
    }
}
