import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIVision

// The export bundle: ONE safetensors file holding the model's state dict under PyTorch's names (so PyTorch loads
// it with `safetensors.torch.load_file` + `load_state_dict`) and, in its string metadata, everything needed to
// rebuild and use the model without code — fastai's `learn.export` without pickle (fastai #4163).
//
// Metadata (all JSON but the first three): `format` = "swiftai-learner", `format_version` = "1", `swiftai_version`,
// `model` (a ``ModelSpec``), `pipeline` (colour mode, item and batch transforms), `vocab`, `loss`, `input_size`
// ([C, H, W] the pipeline produces, or null when it depends on the image), `dtype` (of the stored weights) and, for
// int8 bundles, `quantization` ({"scheme": "static"|"dynamic", "qmax": 127|255}; tensors as
// ``QuantizedModel/quantizedState()`` names them).

/// Precision of the weights in an export bundle: float32, or half precision converted back to float32 when loaded, or
/// int8 — a quantized model (``QuantizedModel``) computing in int8.
public enum ExportDType: String, Sendable, CaseIterable {
    case float32, float16, bfloat16, int8

    var dtype: DType {
        switch self {
        case .float32: return .float32
        case .float16: return .float16
        case .bfloat16: return .bfloat16
        case .int8: return .int8
        }
    }
}

/// Why a learner could not be exported, or a file loaded as one.
public enum BundleError: Error, CustomStringConvertible, Equatable {
    case notExportable(String)
    case notABundle(path: String, reason: String)
    case invalid(path: String, reason: String)

    public var description: String {
        switch self {
        case let .notExportable(why): return "cannot export this learner: \(why)"
        case let .notABundle(path, why): return "'\(path)' is not a SwiftAI export bundle: \(why)"
        case let .invalid(path, why): return "export bundle '\(path)' is invalid: \(why)"
        }
    }
}

enum BundleKeys {
    static let format = "swiftai-learner", version = "1"
}

extension Learner {
    /// fastai's `learn.export`: writes the model and what predicting needs to ONE safetensors file, atomically.
    ///
    /// `pipeline` describes how images become the model's input; by default it is taken from image loaders
    /// (``InferencePipeline/init(_:)``). `dtype` stores the weights in half precision (they are converted back
    /// to float32 when loaded); a quantized model (``quantized(calibration:batches:observer:inputShape:)``) is
    /// always stored as int8. Only classifiers trained with `CrossEntropyLoss` are exported.
    public func export(to path: String, dtype: ExportDType = .float32, pipeline: InferencePipeline? = nil) throws {
        guard let spec = modelSpec else {
            throw BundleError.notExportable(
                "its model was not built from a description (visionLearner or a lesson model); set learn.modelSpec")
        }
        let quantized = model as? QuantizedModel
        guard dtype != .int8 || quantized != nil else {
            throw BundleError.notExportable(
                """
                int8 bundles hold quantized models: quantize first (learn.quantized(calibration:) or `swiftai \
                quantize`)
                """
            )
        }
        guard quantized != nil || !model.modules().contains(where: { $0 is FusedConv2d }) else {
            throw BundleError.notExportable(
                """
                its model is fused for inference; load the bundle with loadLearner(path, fused: false) to export it \
                again
                """
            )
        }
        guard let ce = lossFunc as? CrossEntropyLoss, ce.weight == nil else {
            throw BundleError.notExportable(
                """
                only single-label classifiers trained with CrossEntropyLoss (no class weights) are exported; this one \
                uses \(type(of: lossFunc))
                """
            )
        }
        let p: InferencePipeline
        do { p = try pipeline ?? InferencePipeline(dls) } catch { throw BundleError.notExportable("\(error)") }
        guard p.vocab.count == spec.nOut else {
            throw BundleError.notExportable("the vocab has \(p.vocab.count) classes but the model \(spec.nOut) outputs")
        }
        let pipelineJSON: [String: Any]
        do {
            pipelineJSON = [
                "mode": p.mode.rawValue, "item_tfms": try p.itemTransforms.map(TransformCoding.encode),
                "batch_tfms": try p.batchTransforms.map(TransformCoding.encode)
            ]
        } catch { throw BundleError.notExportable("\(error)") }
        var tensors: [String: Tensor] = [:]
        if let quantized {
            tensors = quantized.quantizedState()
        } else {
            for (k, v) in model.stateDict() { tensors[k] = v.dtype == .float32 ? v.to(dtype.dtype) : v }
        }
        var metadata: [String: String] = [
            "format": BundleKeys.format, "format_version": BundleKeys.version, "swiftai_version": SwiftAIVersion.string,
            "model": jsonString(spec.json), "pipeline": jsonString(pipelineJSON), "vocab": jsonString(p.vocab),
            "loss": jsonString(["type": "CrossEntropyLoss", "label_smoothing": ce.labelSmoothing]),
            "input_size": jsonString(p.inputSize.map { $0 as Any } ?? NSNull()),
            "dtype": quantized == nil ? dtype.rawValue : ExportDType.int8.rawValue
        ]
        if let quantized {
            metadata["quantization"] = jsonString(["scheme": quantized.scheme.rawValue, "qmax": quantized.qmax])
        }
        try Safetensors.write(tensors, metadata: metadata, to: path)
    }
}

func jsonString(_ value: Any) -> String {
    guard let d = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) else {
        return "null"
    }
    return String(decoding: d, as: UTF8.self)
}

/// An export bundle read and checked: the model (weights loaded), its description and pipeline.
public struct ExportBundle {
    public let spec: ModelSpec
    public let model: Module
    public let pipeline: InferencePipeline
    public let labelSmoothing: Double
    /// `[C, H, W]` of the model's input, when fixed.
    public let inputSize: [Int]?
    public let dtype: ExportDType
    public let swiftaiVersion: String

    /// Reads `path`, checks every part, rebuilds the model and loads its weights; throws a ``BundleError`` (or the
    /// file's ``SafetensorsError``) saying what is wrong. Nothing from the file is executed. An int8 bundle's
    /// 8-bit activations are requantized to 7 bits where `int8KernelQMax` is 127 (a CPU without VNNI; see
    /// ``QuantizedModel/load(_:architecture:scheme:qmax:kernelQMax:)``).
    public init(path: String, int8KernelQMax: Int32 = Quantization.activationQMax) throws {
        try self.init(data: Safetensors.mappedBytes(path: path), name: path, int8KernelQMax: int8KernelQMax)
    }

    /// Checks the bytes of a bundle and builds its model as ``init(path:)`` does; `name` identifies it in errors.
    public init(data: Data, name: String, int8KernelQMax: Int32 = Quantization.activationQMax) throws {
        let path = name
        let file: (tensors: [String: Tensor], metadata: [String: String])
        do { file = try Safetensors.decode(data) } catch {
            // A safetensors header length may start with 0x80 too: only a file that is not safetensors is called a
            // .pth.
            if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) || data.starts(with: [0x80]) {
                throw BundleError.notABundle(
                    path: path,
                    reason:
                        """
                        it is a PyTorch .pth file (pickle); export a SwiftAI learner with `learn.export` or `swiftai \
                        train --out`
                        """
                )
            }
            throw error
        }
        let meta = file.metadata
        guard meta["format"] == BundleKeys.format else {
            throw BundleError.notABundle(
                path: path,
                reason:
                    """
                    a safetensors file without SwiftAI's export metadata (plain weights?): load it with \
                    visionLearner(weights:) or Module.load(stateDict:)
                    """
            )
        }
        func invalid(_ why: String) -> BundleError { .invalid(path: path, reason: why) }
        guard meta["format_version"] == BundleKeys.version else {
            throw invalid(
                """
                format version \(meta["format_version"] ?? "none") is not supported (this SwiftAI \
                \(SwiftAIVersion.string) reads version \(BundleKeys.version))
                """
            )
        }
        func json(_ key: String) throws -> Any {
            guard let s = meta[key],
                let v = try? JSONSerialization.jsonObject(with: Data(s.utf8), options: [.fragmentsAllowed])
            else {
                throw invalid("metadata '\(key)' is missing or not JSON")
            }
            return v
        }
        guard let modelJSON = try json("model") as? [String: Any] else {
            throw invalid("metadata 'model' is not an object")
        }
        do { spec = try ModelSpec(json: modelJSON) } catch { throw invalid("\(error)") }
        guard let vocab = try json("vocab") as? [String], vocab.count == spec.nOut, Set(vocab).count == vocab.count
        else {
            throw invalid("metadata 'vocab' must list \(spec.nOut) distinct class names")
        }
        guard let p = try json("pipeline") as? [String: Any], let modeName = p["mode"] as? String,
            let mode = ImageMode(rawValue: modeName),
            let items = p["item_tfms"] as? [[String: Any]], let batches = p["batch_tfms"] as? [[String: Any]],
            items.count <= 16, batches.count <= 16
        else {
            throw invalid(
                "metadata 'pipeline' needs a mode (rgb or gray) and at most 16 item_tfms and batch_tfms objects")
        }
        guard mode.channels == spec.nIn else {
            throw invalid("the pipeline makes \(mode.channels)-channel images but the model takes \(spec.nIn)")
        }
        do {
            pipeline = InferencePipeline(
                mode: mode, itemTransforms: try items.map(TransformCoding.decodeItem),
                batchTransforms: try batches.map(TransformCoding.decodeBatch), vocab: vocab)
        } catch { throw invalid("\(error)") }
        guard let loss = try json("loss") as? [String: Any], loss["type"] as? String == "CrossEntropyLoss",
            let ls = (loss["label_smoothing"] as? NSNumber)?.doubleValue, (0...1).contains(ls)
        else {
            throw invalid("metadata 'loss' must be CrossEntropyLoss with label_smoothing in [0, 1]")
        }
        labelSmoothing = ls
        guard let dt = meta["dtype"].flatMap(ExportDType.init(rawValue:)) else {
            throw invalid(
                "metadata 'dtype' must be one of \(ExportDType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        dtype = dt
        let size = try json("input_size")
        if let s = size as? [Int], s.count == 3, s[0] == spec.nIn,
            s.allSatisfy({ (1...TransformCoding.maxSide).contains($0) })
        {
            inputSize = s
        } else if size is NSNull {
            inputSize = nil
        } else {
            throw invalid("metadata 'input_size' must be null or [\(spec.nIn), H, W]")
        }
        swiftaiVersion = meta["swiftai_version"] ?? "unknown"
        // The described model must be backed by the file's values before anything is allocated.
        let stored = file.tensors.values.reduce(0) { $0 + $1.count }
        guard spec.minimumParameterCount <= stored else {
            throw invalid(
                """
                the model description needs at least \(spec.minimumParameterCount) parameters but the file holds only \
                \(stored) values
                """
            )
        }
        let spec = spec
        let architecture = Init.skipping { spec.make(generator: Generator(seed: 0)) }  // every weight is loaded next
        if dt == .int8 {
            guard let q = try json("quantization") as? [String: Any],
                let scheme = (q["scheme"] as? String).flatMap(QuantizationScheme.init),
                let qmax = (q["qmax"] as? NSNumber)?.int32Value, qmax == 127 || qmax == 255
            else {
                throw invalid("metadata 'quantization' must give a scheme (static or dynamic) and qmax (127 or 255)")
            }
            do {
                model = try QuantizedModel.load(
                    file.tensors, architecture: architecture, scheme: scheme, qmax: qmax,
                    kernelQMax: int8KernelQMax)
            } catch { throw invalid("\(error)") }
        } else {
            model = architecture
            try Self.load(file.tensors, into: model, dtype: dt.dtype, invalid)
        }
    }

    /// Checks names, dtypes and shapes against the model's state dict, then loads (all or nothing).
    private static func load(
        _ tensors: [String: Tensor], into model: Module, dtype: DType, _ invalid: (String) -> BundleError
    ) throws {
        let expected = model.stateDict()
        if let missing = expected.keys.sorted().first(where: { tensors[$0] == nil }) {
            throw invalid("tensor '\(missing)' \(expected[missing]!.shape) is missing")
        }
        if let extra = tensors.keys.sorted().first(where: { expected[$0] == nil }) {
            throw invalid(
                """
                unexpected tensor '\(extra)' \(tensors[extra]!.shape) (not in a \(type(of: model)) of this \
                description)
                """
            )
        }
        var converted: [String: Tensor] = [:]
        for name in expected.keys.sorted() {  // the first mismatch by name: the same error every run
            let want = expected[name]!, got = tensors[name]!
            let wantDType = want.dtype == .float32 ? dtype : want.dtype
            guard got.dtype == wantDType, got.shape == want.shape else {
                throw invalid(
                    "tensor '\(name)' is \(got.dtype) \(got.shape), the description needs \(wantDType) \(want.shape)")
            }
            converted[name] = got.dtype == want.dtype ? got : got.to(want.dtype)
        }
        do { try model.load(stateDict: converted) } catch { throw invalid("\(error)") }
    }
}

/// fastai's `load_learner`: a learner rebuilt from an export bundle, ready to `predict`, `tta` and evaluate loaders
/// made with its pipeline (`learn.dls` carry the pipeline and vocab but no items).
///
/// With `fused` (default) the model is ``Module/fusedForInference()``'s copy — faster, but it cannot be trained or
/// exported again; pass `false` for the trainable model. An int8 bundle always gives its ``QuantizedModel``.
public func loadLearner(_ path: String, fused: Bool = true) throws -> Learner {
    let bundle = try ExportBundle(path: path)
    bundle.model.eval()
    let learn = Learner(
        model: fused ? bundle.model.fusedForInference() : bundle.model, dls: bundle.pipeline.dataLoaders(),
        lossFunc: CrossEntropyLoss(labelSmoothing: bundle.labelSmoothing), metrics: [.accuracy], progress: false)
    learn.modelSpec = bundle.spec
    return learn
}

extension Learner {
    /// The model as ONNX (opset 17, dynamic batch; input: the normalised image batch, output: logits), for inputs of
    /// `inputShape` `[C, H, W]` (default: what the loaders' pipeline makes of any image).
    public func exportONNX(to path: String, inputShape: [Int]? = nil) throws {
        guard let shape = try inputShape ?? InferencePipeline(dls).inputSize else {
            throw BundleError.notExportable(
                "the pipeline's output size depends on the image; pass inputShape: [C, H, W]")
        }
        let wasTraining = model.training
        model.eval()
        defer { model.train(wasTraining) }
        try SwiftAIDeploy.exportONNX(model, inputShape: shape, to: path)
    }
}
