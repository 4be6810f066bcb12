import Foundation
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim

/// Options of the training scenarios: `--opt sgd|adamw`, `--steps N`, `--bs B` (global), `--seed S` (added to
/// the rank with `--seed-per-rank`), `--valid N` (validation items), `--bucket-mb M`.
struct TrainingOptions {
    var opt = "sgd", steps = 20, bs = 24, seed: UInt64 = 1, seedPerRank = false, valid = 101, bucketMB = 25.0
    var model = "plain"
    /// Micro-batches per step (all but the last backward inside `noSync`).
    var micro = 1
    /// `--nan RANK:STEP`: that rank's loss is NaN at that step (the others' are not).
    var nan: (rank: Int, step: Int)?
    /// A reference run's JSON line: the parameters must end within 1e-5 of its own.
    var expect: String?

    init(_ args: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw CheckFailed("missing value for \(args[i - 1])") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--opt": opt = try value()
            case "--model": model = try value()
            case "--steps": steps = Int(try value())!
            case "--bs": bs = Int(try value())!
            case "--seed": seed = UInt64(try value())!
            case "--seed-per-rank": seedPerRank = true
            case "--valid": valid = Int(try value())!
            case "--bucket-mb": bucketMB = Double(try value())!
            case "--expect": expect = try value()
            case "--micro": micro = Int(try value())!
            case "--nan":
                let parts = try value().split(separator: ":").compactMap { Int($0) }
                nan = (parts[0], parts[1])
            default: throw CheckFailed("unknown option \(args[i])")
            }
            i += 1
        }
    }
}

/// A small convolutional classifier: `plain` has no BatchNorm, `bn` has BatchNorm2d layers.
func scenarioModel(_ kind: String, generator: Generator) -> Module {
    let bn = kind == "bn"
    // A convolution followed by BatchNorm has no bias (its gradient would be zero but for rounding, which Adam
    // would amplify).
    var layers: [Module] = [Conv2d(1, 8, kernelSize: 3, padding: 1, bias: !bn, generator: generator)]
    if bn { layers.append(BatchNorm2d(8)) }
    layers += [ReLU(), Conv2d(8, 16, kernelSize: 3, stride: 2, padding: 1, bias: !bn, generator: generator)]
    if bn { layers.append(BatchNorm2d(16)) }
    layers += [ReLU(), AdaptiveAvgPool2d(1), Flatten(), Linear(16, 10, generator: generator)]
    return Sequential(layers)
}

/// Synthetic 10-class data (the same on every rank): `[n, 1, 8, 8]` images whose class shifts their mean.
func scenarioData(train: Int, valid: Int, bs: Int) -> DataLoaders {
    let g = Generator(seed: 1234)
    func make(_ n: Int) -> (Tensor, Tensor) {
        let y = Tensor.randint(0, 10, [n], generator: g)
        let shift = y.to(.float32).reshape([n, 1, 1, 1]) * 0.1
        return (Tensor.randn([n, 1, 8, 8], generator: g) + shift, y)
    }
    let (xt, yt) = make(train), (xv, yv) = make(valid)
    return DataLoaders(
        train: DataLoader(xt, yt, batchSize: bs, shuffle: true, seed: 7, prefetch: 0),
        valid: DataLoader(xv, yv, batchSize: bs, prefetch: 0), vocab: (0..<10).map(String.init))
}

/// Records every rank's parameters after each step and checks they are identical on all ranks (bit for bit).
final class SameOnEveryRank: Callback {
    var steps = 0
    override func afterStep(_ learn: Learner) throws {
        steps += 1
        let flat = Tensor.cat(learn.model.parameters().map { $0.value.detached().reshape([-1]) })
        let all = learn.group.allGather(flat)
        for r in 1..<all.shape[0] {
            let diff = (all[r] - all[0]).abs().max().item()
            try check(diff == 0, "step \(steps): rank \(r)'s parameters differ from rank 0's by up to \(diff)")
        }
    }
}

/// Gradient accumulation inside one step: the batch's loss is the mean of `n` equal micro-batches' losses, each
/// backward but the last inside `noSync`, so ranks all-reduce once per step.
final class MicroBatches: TrainStep {
    let n: Int
    init(_ n: Int) { self.n = n }

    override func backward(_ learn: Learner) throws {
        let (x, y) = learn.batch, size = x.shape[0] / n
        for i in 0..<n {
            let part = (i * size)..<((i + 1) * size)
            let loss = learn.lossFunc(learn.model(x[part]), y[part]) * (1 / Double(n))
            if i < n - 1 { learn.noSync { loss.backward() } } else { loss.backward() }
        }
    }
}

/// A loss that turns NaN at training step `step` (on the rank that installs it).
final class PoisonedLoss: TrainStep {
    let step: Int
    init(at step: Int) { self.step = step }

    override func getLoss(_ learn: Learner) throws {
        try super.getLoss(learn)
        if learn.training && learn.trainIter == step { learn.loss = learn.loss! * Double.nan }
    }
}

/// Trains the scenario model for `--steps` steps of global batch `--bs` — distributed under mpirun, one process
/// otherwise — and prints the final parameters, the validation loss and accuracy of the fit (reduced over ranks),
/// and (rank 0) a one-process evaluation of the same weights with its predictions checked against the gathered ones.
func train(_ args: [String]) throws {
    let o = try TrainingOptions(args)
    let g = try ProcessGroup.fromEnvironment()
    let seed = o.seed + (o.seedPerRank ? UInt64(g.rank) * 1000 : 0)
    let model = scenarioModel(o.model, generator: Generator(seed: seed))
    if o.model == "bn" && g.size > 1 { convertSyncBatchNorm(model) }
    let dls = scenarioData(train: o.steps * o.bs, valid: o.valid, bs: o.bs)
    let optFunc: (Module, Double) -> Optimizer =
        o.opt == "adamw"
        ? { m, lr in AdamW(m.parameters(), lr: lr, weightDecay: 0.01) }
        : { m, lr in SGD(m.parameters(), lr: lr, momentum: 0.9) }
    let learn = Learner(
        model: model, dls: dls, lr: o.opt == "adamw" ? 3e-3 : 0.05, metrics: [.accuracy],
        callbacks: [TerminateOnNaN()], progress: false, optFunc: optFunc)
    if o.micro > 1 { learn.trainStep = MicroBatches(o.micro) }
    if let nan = o.nan, nan.rank == g.rank { learn.trainStep = PoisonedLoss(at: nan.step) }
    let same = SameOnEveryRank()
    var gathered: (preds: Tensor, targets: Tensor)?
    try learn.distributed(g, bucketMegabytes: o.bucketMB) {
        try learn.fit(1, callbacks: g.size > 1 ? [same] : [])
        gathered = try learn.getPreds()
    }
    let steps = learn.recorder.rawLosses.count
    try check(steps == (o.nan?.step ?? o.steps), "ran \(steps) steps")
    let params = learn.model.parameters().flatMap { $0.value.scalars(as: Float.self) }.map(Double.init)
    var result: [String: Any] = [
        "size": g.size, "params": params, "valid_loss": learn.recorder.last("valid_loss") ?? -1,
        "accuracy": learn.recorder.last("accuracy") ?? -1, "losses": learn.recorder.rawLosses,
        "stop": learn.stopReason ?? ""
    ]
    if g.isMain {
        // The same weights evaluated by this process alone (the learner is no longer distributed).
        let alone = try learn.getPreds(withLoss: true)
        let accuracy = (alone.preds.argmax(dim: -1) .== alone.targets).to(.float64).mean().item()
        result["alone_valid_loss"] = alone.losses.to(.float64).mean().item()
        result["alone_accuracy"] = accuracy
        let d = (gathered!.preds - alone.preds).abs().max().item()
        try check(
            gathered!.preds.shape == alone.preds.shape, "gathered \(gathered!.preds.shape) vs \(alone.preds.shape)")
        try check(d < 1e-5, "gathered predictions differ from one process's by \(d)")
        try check(gathered!.targets.scalars(as: Int64.self) == alone.targets.scalars(as: Int64.self), "targets order")
    }
    if let expect = o.expect, g.isMain {
        let line = try String(contentsOfFile: expect, encoding: .utf8)
        let reference = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let want = try (reference?["params"] as? [Double]).unwrap("no params in \(expect)")
        let diff = zip(params, want).map { abs($0 - $1) }.max() ?? .infinity
        try check(want.count == params.count && diff < 1e-5, "parameters differ from \(expect)'s by \(diff)")
        result["max_diff_vs_expected"] = diff
    }
    report(g, result)
}

extension Optional {
    func unwrap(_ message: String) throws -> Wrapped {
        guard let self else { throw CheckFailed(message) }
        return self
    }
}
