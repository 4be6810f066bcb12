import Foundation
import SwiftAICore

/// Weight initialisation (PyTorch's `nn.init`), drawing from an explicit, seedable ``Generator``.
public enum Init {
    /// Which fan a Kaiming initialisation preserves the variance of.
    public enum FanMode: Sendable { case fanIn, fanOut }

    /// The non-linearity after the layer, for the gain.
    public enum Nonlinearity: Sendable { case linear, sigmoid, tanh, relu, leakyRelu, selu }

    /// PyTorch's `calculate_gain`; `param` is the leaky-ReLU slope.
    public static func gain(_ n: Nonlinearity, param: Double = 0.01) -> Double {
        switch n {
        case .linear, .sigmoid: return 1
        case .tanh: return 5.0 / 3
        case .relu: return 2.0.squareRoot()
        case .leakyRelu: return (2 / (1 + param * param)).squareRoot()
        case .selu: return 0.75
        }
    }

    /// (fan in, fan out) of a weight: `[out, in, k…]`.
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        require(
            shape.count >= 2,
            "Init: fan in and fan out can not be computed for tensor with fewer than 2 dimensions (shape \(shape))")
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape[1] * receptive, shape[0] * receptive)
    }

    /// Builds modules inside `body` without their random initialisation (parameters keep their zeros), for models
    /// whose weights are loaded right after — PyTorch's `skip_init`. Applies to the calling thread only.
    public static func skipping<R>(_ body: () throws -> R) rethrows -> R {
        let key = "swiftai.Init.skipping", dict = Thread.current.threadDictionary
        let outer = dict[key]
        dict[key] = true
        defer { dict[key] = outer }
        return try body()
    }

    static var isSkipping: Bool { Thread.current.threadDictionary["swiftai.Init.skipping"] != nil }

    /// Kaiming (He) normal: std = gain / √fan. `a` is the leaky-ReLU slope of the following activation.
    public static func kaimingNormal(
        _ p: Parameter, a: Double = 0, mode: FanMode = .fanIn,
        nonlinearity: Nonlinearity = .leakyRelu, generator: Generator = .default
    ) {
        if isSkipping { return }
        let (fi, fo) = fans(p.shape)
        let std = gain(nonlinearity, param: a) / Double(mode == .fanIn ? fi : fo).squareRoot()
        p.setData(Tensor.randn(p.shape, std: std, dtype: p.value.dtype, generator: generator))
    }

    /// Kaiming (He) uniform: bound = gain·√(3 / fan).
    public static func kaimingUniform(
        _ p: Parameter, a: Double = 0, mode: FanMode = .fanIn,
        nonlinearity: Nonlinearity = .leakyRelu, generator: Generator = .default
    ) {
        let (fi, fo) = fans(p.shape)
        let bound = gain(nonlinearity, param: a) * (3 / Double(mode == .fanIn ? fi : fo)).squareRoot()
        uniform(p, low: -bound, high: bound, generator: generator)
    }

    /// Xavier (Glorot) normal: std = gain·√(2 / (fan in + fan out)).
    public static func xavierNormal(_ p: Parameter, gain g: Double = 1, generator: Generator = .default) {
        if isSkipping { return }
        let (fi, fo) = fans(p.shape)
        p.setData(
            Tensor.randn(
                p.shape, std: g * (2 / Double(fi + fo)).squareRoot(), dtype: p.value.dtype, generator: generator))
    }

    /// Xavier (Glorot) uniform: bound = gain·√(6 / (fan in + fan out)).
    public static func xavierUniform(_ p: Parameter, gain g: Double = 1, generator: Generator = .default) {
        let (fi, fo) = fans(p.shape)
        let bound = g * (6 / Double(fi + fo)).squareRoot()
        uniform(p, low: -bound, high: bound, generator: generator)
    }

    /// Uniform in [low, high).
    public static func uniform(_ p: Parameter, low: Double = 0, high: Double = 1, generator: Generator = .default) {
        if isSkipping { return }
        p.setData(Tensor.uniform(p.shape, low: low, high: high, dtype: p.value.dtype, generator: generator))
    }

    /// Normal with `mean` and `std`.
    public static func normal(_ p: Parameter, mean: Double = 0, std: Double = 1, generator: Generator = .default) {
        if isSkipping { return }
        p.setData(Tensor.randn(p.shape, mean: mean, std: std, dtype: p.value.dtype, generator: generator))
    }

    /// Every element `value`.
    public static func constant(_ p: Parameter, _ value: Double) {
        p.setData(Tensor.full(p.shape, value, dtype: p.value.dtype))
    }

    public static func zeros(_ p: Parameter) { constant(p, 0) }
    public static func ones(_ p: Parameter) { constant(p, 1) }

    /// Layer-sequential unit-variance initialisation (the lesson's LSUV).
    ///
    /// For each `(observe, adjust)` pair, runs `batch` through `model` and, while the output of `observe`
    /// has |mean| > `tolerance` or |std − 1| > `tolerance`, subtracts the mean from `adjust`'s bias and divides
    /// its weight by the std. Pairs are processed in order, so earlier layers settle first.
    /// - Returns: the final (mean, std) observed for each pair.
    @discardableResult
    public static func lsuv(
        _ model: Module, batch: Tensor, pairs: [(observe: Module, adjust: Module)],
        tolerance: Double = 1e-3, maxIterations: Int = 50
    ) -> [(mean: Double, std: Double)] {
        var results: [(Double, Double)] = []
        noGrad {
            for (observe, adjust) in pairs {
                var stats = (mean: 0.0, std: 1.0)
                let handle = observe.registerForwardHook { _, _, out in stats = (out.mean().item(), out.std().item()) }
                let params = Dictionary(adjust.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
                for _ in 0..<maxIterations {
                    _ = model(batch)
                    if Swift.abs(stats.mean) <= tolerance && Swift.abs(stats.std - 1) <= tolerance { break }
                    if let b = params["bias"] { b.setData(b.value - stats.mean) }
                    if let w = params["weight"], stats.std > 0 { w.setData(w.value / stats.std) }
                }
                _ = model(batch)
                handle.remove()
                results.append(stats)
            }
        }
        return results
    }

    /// LSUV over every `Conv2d`/`Linear` of `model`, each observed at the first activation that follows it
    /// (or at itself when none does), as the lesson pairs `relus` with `convs`.
    @discardableResult
    public static func lsuv(_ model: Module, batch: Tensor, tolerance: Double = 1e-3, maxIterations: Int = 50)
        -> [(mean: Double, std: Double)]
    {
        let mods = model.modules()
        var pairs: [(Module, Module)] = []
        for (i, m) in mods.enumerated() where m is Conv2d || m is Linear {
            let act = mods[(i + 1)...].prefix { !($0 is Conv2d || $0 is Linear) }.first { $0 is ActivationModule }
            pairs.append((act ?? m, m))
        }
        return lsuv(model, batch: batch, pairs: pairs, tolerance: tolerance, maxIterations: maxIterations)
    }
}
