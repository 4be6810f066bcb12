import Foundation
import SwiftAICore
import SwiftAINN
import SwiftAIOptim

/// fastai's `MixedPrecision`, on the CPU: during a fit, convolutions, linear layers and matrix products compute in
/// bfloat16 (or float16) through oneDNN, with float32 accumulation, outputs and gradients (in user-written modules
/// too: the ops consult ``Autocast``); the parameters (the master weights), losses, normalisation and reductions stay
/// float32. With float16 a ``GradScaler`` scales the loss before the backward pass and unscales the gradients before
/// the step, skipping steps whose gradients overflow.
///
/// Where the CPU has no native support (``CPUFeatures/lowPrecisionUnavailable(_:)``) the callback does nothing:
/// emulated low precision would be several times slower than float32. ``Learner/toBF16(note:)`` says so once.
public final class MixedPrecision: Callback {
    /// `.bfloat16` or `.float16`.
    public let precision: DType
    /// Loss scaling (float16's default: PyTorch's `GradScaler` defaults; bfloat16, whose range is float32's, has none).
    public let scaler: GradScaler?
    /// Why this CPU cannot compute in ``precision`` (the callback then does nothing); `nil` when it can.
    public let unavailable: String?
    private var unscaledLoss: Tensor?

    public override var order: Int { 10 }

    public convenience init(_ precision: DType = .bfloat16, scaler: GradScaler? = nil) {
        self.init(precision, scaler: scaler, unavailable: CPUFeatures.lowPrecisionUnavailable(precision))
    }

    /// With `unavailable` decided by the caller (tests run the loss scaling where no float16 kernels exist).
    init(_ precision: DType, scaler: GradScaler?, unavailable: String?) {
        require(
            precision == .bfloat16 || precision == .float16,
            "MixedPrecision: precision must be bfloat16 or float16, got \(precision)")
        self.precision = precision
        self.scaler = scaler ?? (precision == .float16 ? GradScaler() : nil)
        self.unavailable = unavailable
    }

    /// Whether low precision is on and the loss is scaled.
    var scalesLoss: Bool { unavailable == nil && scaler != nil }

    /// The loss scale and its good-step count, which a resumed float16 run continues from.
    public override func checkpointState() throws -> Data? {
        guard let scaler else { return nil }
        return try JSONEncoder().encode([scaler.scale, Double(scaler.growthTracker)])
    }

    public override func restore(checkpointState data: Data) throws {
        let s = try JSONDecoder().decode([Double].self, from: data)
        guard let scaler, s.count == 2 else { return }
        scaler.scale = s[0]
        scaler.growthTracker = Int(s[1])
    }

    /// Runs the fit under ``autocast(_:_:)`` (when this CPU computes in ``precision``).
    public override func fitScope(_ body: () throws -> Void) throws {
        if unavailable == nil { try autocast(precision, body) } else { try body() }
    }

    public override func beforeBackward(_ learn: Learner) throws {
        guard scalesLoss, let loss = learn.loss else { return }
        unscaledLoss = loss
        learn.loss = scaler!.scaled(loss)
    }

    /// The recorded loss is the unscaled one.
    public override func afterBackward(_ learn: Learner) throws {
        guard let l = unscaledLoss else { return }
        learn.loss = l
        unscaledLoss = nil
    }

    public override func beforeStep(_ learn: Learner) throws {
        guard scalesLoss, let scaler, let opt = learn.opt else { return }
        let finite = scaler.unscale(opt.parameters)
        scaler.update(foundInf: !finite)
        if !finite { throw CancelStep() }
    }
}

extension Learner {
    /// fastai's `to_bf16()`: trains with a bfloat16 ``MixedPrecision`` callback. On a CPU without native bfloat16
    /// (avx512_bf16 or AMX) `note` receives why, once, and training stays float32.
    @discardableResult
    public func toBF16(note: (String) -> Void = printToStandardError) -> Learner {
        mixedPrecision(MixedPrecision(.bfloat16), note: note)
    }

    /// fastai's `to_fp16()`: float16 ``MixedPrecision`` with dynamic loss scaling. On a CPU (or oneDNN) without
    /// native float16 `note` receives why, once, and training stays float32.
    @discardableResult
    public func toFP16(scaler: GradScaler = GradScaler(), note: (String) -> Void = printToStandardError) -> Learner {
        mixedPrecision(MixedPrecision(.float16, scaler: scaler), note: note)
    }

    /// fastai's `to_fp32()`: removes mixed precision.
    @discardableResult
    public func toFP32() -> Learner {
        while let cb = callback(MixedPrecision.self) { remove(cb) }
        return self
    }

    private func mixedPrecision(_ cb: MixedPrecision, note: (String) -> Void) -> Learner {
        toFP32()
        if let why = cb.unavailable { note("\(why) — training stays float32") }
        if CPUFeatures.referenceForced {
            note(
                "\(cb.precision) on the reference path (SWIFTAI_LOW_PRECISION=reference): rounded operands, "
                    + "float32 kernels")
        }
        add(cb)
        return self
    }
}

/// Writes `line` and a newline to standard error.
public func printToStandardError(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
