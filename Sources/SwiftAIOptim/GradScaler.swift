import SwiftAICore
import SwiftAINN

/// Dynamic loss scaling for float16 training, as PyTorch's `torch.amp.GradScaler` (which fastai's `MixedPrecision`
/// uses): the loss is multiplied by ``scale`` before the backward pass so small float16 gradients do not flush to
/// zero; before the optimizer step the gradients are divided by it again. A step whose gradients hold inf or NaN is
/// skipped and the scale multiplied by ``backoffFactor``; after ``growthInterval`` good steps in a row it is
/// multiplied by ``growthFactor``.
public final class GradScaler {
    /// The current loss scale.
    public var scale: Double
    public let growthFactor: Double
    public let backoffFactor: Double
    public let growthInterval: Int
    /// Good steps since the scale last changed.
    public var growthTracker = 0

    /// PyTorch's defaults: initial scale 2¹⁶, growth ×2 every 2000 good steps, back-off ×0.5.
    public init(
        initScale: Double = 65536, growthFactor: Double = 2, backoffFactor: Double = 0.5, growthInterval: Int = 2000
    ) {
        require(
            initScale > 0 && growthFactor > 1 && backoffFactor > 0 && backoffFactor < 1 && growthInterval > 0,
            "GradScaler: need initScale > 0, growthFactor > 1, 0 < backoffFactor < 1 and growthInterval > 0")
        scale = initScale
        self.growthFactor = growthFactor
        self.backoffFactor = backoffFactor
        self.growthInterval = growthInterval
    }

    /// `loss × scale` (PyTorch's `scaler.scale(loss)`), to call `backward()` on.
    public func scaled(_ loss: Tensor) -> Tensor { loss * scale }

    /// Divides every gradient of `params` by the scale (multiplying by its float32 reciprocal, as PyTorch) and
    /// returns whether all of them are finite.
    public func unscale(_ params: [Parameter]) -> Bool {
        let inv = Double(Float(1 / scale))
        var finite = true
        noGrad {
            for p in params {
                guard let g = p.grad else { continue }
                let u = (g * inv).contiguous()
                if finite { finite = Self.allFinite(u) }
                p.grad = u
            }
        }
        return finite
    }

    /// Adjusts the scale after a step (PyTorch's `scaler.update()`): back off on `foundInf`, grow after
    /// ``growthInterval`` good steps.
    public func update(foundInf: Bool) {
        if foundInf {
            scale *= backoffFactor
            growthTracker = 0
        } else {
            growthTracker += 1
            if growthTracker == growthInterval {
                scale *= growthFactor
                growthTracker = 0
            }
        }
    }

    /// Unscales `opt`'s gradients, runs `opt.step()` only when they are all finite, and updates the scale
    /// (PyTorch's `scaler.step(opt); scaler.update()`). Returns whether the step ran.
    @discardableResult
    public func step(_ opt: Optimizer) -> Bool {
        let finite = unscale(opt.parameters)
        if finite { opt.step() }
        update(foundInf: !finite)
        return finite
    }

    private static func allFinite(_ t: Tensor) -> Bool {
        if t.dtype == .float64 { return t.doubles.allSatisfy(\.isFinite) }
        let p = t.pointer(Float.self)
        for i in 0..<t.count where !p[i].isFinite { return false }
        return true
    }
}
