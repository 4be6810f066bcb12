import ArgumentParser
import SwiftAICore
import SwiftAILearner
import SwiftAINN

/// A model to train: one of the lesson's Fashion-MNIST models or a torchvision ResNet.
enum Arch: ExpressibleByArgument, CustomStringConvertible {
    case lesson(FashionMNISTModel)
    case torchvision(ResNetArch)

    init?(argument: String) {
        if let m = FashionMNISTModel(rawValue: argument) {
            self = .lesson(m)
        } else if let r = ResNetArch(rawValue: argument) {
            self = .torchvision(r)
        } else {
            return nil
        }
    }

    var description: String {
        switch self {
        case let .lesson(m): return m.rawValue
        case let .torchvision(r): return r.rawValue
        }
    }

    static var allValueStrings: [String] {
        FashionMNISTModel.allCases.map(\.rawValue) + ResNetArch.allCases.map(\.rawValue)
    }

    /// Default batch size, peak learning rate and weight decay of `swiftai train` (torchvision: fastai's
    /// `fit_one_cycle` default lr 1e-3; `fineTune` uses its own base lr 2e-3).
    var trainDefaults: (bs: Int, lr: Double, wd: Double) {
        switch self {
        case let .lesson(m): return m.trainDefaults
        case .torchvision: return (64, 1e-3, 0.01)
        }
    }
}

extension FashionMNISTModel {
    /// Default batch size, peak learning rate and weight decay of `swiftai train`.
    ///
    /// resnet and wide follow the lesson (bs 1024, lr 2e-2, AdamW's wd 0.01; wide is run with `--lr 1e-2`). The
    /// small cnn was chosen on a held-out split of the training set (BENCHMARKS.md, issue #4): at bs 1024 it needs
    /// more steps than 5 epochs give, and among ten bs/lr/wd recipes bs 32, lr 5e-3, wd 0.1 scored highest.
    var trainDefaults: (bs: Int, lr: Double, wd: Double) {
        self == .cnn ? (32, 5e-3, 0.1) : (1024, 2e-2, 0.01)
    }
}

extension ResNetArch: ExpressibleByArgument {}

/// A learning rate from the command line: `1e-3`, or `1e-5:1e-3` for `slice(1e-5, 1e-3)` across layer groups.
extension LearningRate: ExpressibleByArgument {
    public init?(argument: String) {
        let parts = argument.split(separator: ":").map { Double($0) }
        guard !parts.isEmpty, parts.count <= 2, parts.allSatisfy({ $0 != nil && $0! > 0 }) else { return nil }
        self = parts.count == 1 ? LearningRate(parts[0]!) : .slice(parts[0]!, parts[1]!)
    }
}

/// `--precision`: float32, or mixed precision (fastai's `to_bf16()` / `to_fp16()`).
enum TrainPrecision: String, ExpressibleByArgument, CaseIterable {
    case fp32, bf16, fp16

    /// The operand type it names.
    var dtype: DType {
        switch self {
        case .fp32: .float32
        case .bf16: .bfloat16
        case .fp16: .float16
        }
    }
}
