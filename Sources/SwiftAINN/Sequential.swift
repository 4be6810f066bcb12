import SwiftAICore

/// Modules applied in order; children are named `0`, `1`, … as in PyTorch.
public final class Sequential: Module {
    public private(set) var layers: [Module]

    public init(_ layers: [Module]) {
        self.layers = layers
        super.init()
    }

    public convenience init(_ layers: Module...) { self.init(layers) }

    public override var namedChildren: [(String, Module)] {
        layers.enumerated().map { (String($0.offset), $0.element) }
    }

    public override func forward(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }

    public override func fusedForInference() -> Module { fusedLayers() }

    public var count: Int { layers.count }

    /// The `i`-th layer (negative counts from the end).
    public subscript(_ i: Int) -> Module { layers[i < 0 ? i + layers.count : i] }

    /// A new `Sequential` sharing the selected layers (like `model[:-2]`).
    public subscript(_ r: Range<Int>) -> Sequential { Sequential(Array(layers[r])) }

    /// Appends a layer.
    public func append(_ m: Module) { layers.append(m) }
}

/// Factory for an activation module (e.g. `{ GeneralRelu(leak: 0.1, sub: 0.4) }`).
public typealias ActivationFactory = () -> Module
/// Factory for a normalisation module from a channel count (e.g. `{ BatchNorm2d($0) }`).
public typealias NormFactory = (Int) -> Module

/// The lesson's `conv`: Conv2d (padding `ks/2`), then optional norm, then optional activation.
/// The conv has a bias unless a batch norm follows (`bias: nil`), as in miniai.
public func conv(
    _ ni: Int, _ nf: Int, ks: Int = 3, stride: Int = 2, act: ActivationFactory? = { ReLU() },
    norm: NormFactory? = nil, bias: Bool? = nil, generator: Generator = .default
) -> Sequential {
    let normLayer = norm?(nf)
    let useBias = bias ?? !(normLayer is BatchNorm)
    var layers: [Module] = [
        Conv2d(ni, nf, kernelSize: ks, stride: stride, padding: ks / 2, bias: useBias, generator: generator)
    ]
    if let normLayer { layers.append(normLayer) }
    if let act { layers.append(act()) }
    return Sequential(layers)
}

/// The lesson's residual block: `act(convs(x) + idconv(pool(x)))`.
///
/// `convs` is two convs (the second with stride `stride` and no activation); `idconv` is a 1×1 conv (with
/// `norm`) when channels change; `pool` is `AvgPool2d(2, ceilMode: true)` when `stride` is 2. With
/// `zeroInitLastNorm` the last BatchNorm's weight starts at 0, so the block starts as the identity path.
public final class ResBlock: Module {
    public let convs: Sequential
    public let idconv: Module
    public let pool: Module
    public let act: Module

    public init(
        _ ni: Int, _ nf: Int, stride: Int = 1, ks: Int = 3, act: @escaping ActivationFactory = { ReLU() },
        norm: NormFactory? = { BatchNorm2d($0) }, zeroInitLastNorm: Bool = false, generator: Generator = .default
    ) {
        convs = Sequential(
            conv(ni, nf, ks: ks, stride: 1, act: act, norm: norm, generator: generator),
            conv(nf, nf, ks: ks, stride: stride, act: nil, norm: norm, generator: generator))
        idconv = ni == nf ? Identity() : conv(ni, nf, ks: 1, stride: 1, act: nil, norm: norm, generator: generator)
        pool = stride == 1 ? Identity() : AvgPool2d(2, ceilMode: true)
        self.act = act()
        super.init()
        if zeroInitLastNorm, let bn = (convs[1] as? Sequential)?.layers.last(where: { $0 is BatchNorm }) as? BatchNorm,
            let w = bn.weight
        {
            Init.zeros(w)
        }
    }

    public override func forward(_ x: Tensor) -> Tensor { act(convs(x) + idconv(pool(x))) }

    /// `convs[1]`'s convolution adds the shortcut and applies `act` in its kernel (unfused if `act` or a norm cannot
    /// be).
    public override func fusedForInference() -> Module {
        guard convs.count == 2, let second = convs[1] as? Sequential, let actEpilogue = FusedConv2d.epilogue(of: act),
            let last = FusedConv2d.fuse(exactly: second.layers, epilogue: [.addResidual] + actEpilogue)
        else { return self }
        return FusedResidual(
            main: [convs[0].fusedForInference()], last: last,
            shortcut: Sequential(pool, idconv.fusedForInference()), source: self)
    }
}
