import SwiftAICore

/// Which weights an L1 pruning ranks together.
public enum PruningScope: String, Sendable {
    /// All pruned layers' weights at once (PyTorch's `prune.global_unstructured`).
    case global
    /// Each layer on its own (PyTorch's `prune.l1_unstructured` on every layer).
    case perLayer = "per-layer"
}

/// The masks of an unstructured pruning: 1 keeps a weight, 0 removes it.
public struct PruningMasks {
    public let masks: [(parameter: Parameter, mask: Tensor)]

    /// Zeroes the pruned weights again (after an optimizer step has moved them).
    public func apply() {
        noGrad { for (p, m) in masks { p.setData(p.value * m) } }
    }

    /// Share of the masked weights that are pruned.
    public var sparsity: Double {
        let total = masks.reduce(0) { $0 + $1.mask.count }
        let kept = masks.reduce(0.0) { $0 + $1.mask.sum().item() }
        return total == 0 ? 0 : 1 - kept / Double(total)
    }
}

extension Module {
    /// L1 unstructured pruning (PyTorch's `torch.nn.utils.prune`): removes the `amount` share of the smallest-magnitude
    /// weights of every Conv2d and Linear layer (`round(amount · n)` of them, PyTorch's count), ranked together or per
    /// layer, and returns the masks so fine-tuning can keep them (``PruningMasks/apply()``). Biases are kept.
    @discardableResult
    public func pruneL1Unstructured(amount: Double, scope: PruningScope = .global) -> PruningMasks {
        require((0...1).contains(amount), "pruneL1Unstructured: amount \(amount) must be in [0, 1]")
        let weights: [Parameter] = modules().compactMap { ($0 as? Conv2d)?.weight ?? ($0 as? Linear)?.weight }
        let groups = scope == .global ? [weights] : weights.map { [$0] }
        var masks: [(parameter: Parameter, mask: Tensor)] = []
        for group in groups {
            let values = group.flatMap { $0.value.to(.float32).contiguous().floats.map(abs) }
            let k = Int((amount * Double(values.count)).rounded(.toNearestOrEven))
            var pruned = [Bool](repeating: false, count: values.count)
            // The k smallest magnitudes (ties: lower index first).
            for i in values.indices.sorted(by: { values[$0] < values[$1] || (values[$0] == values[$1] && $0 < $1) })
                .prefix(k)
            {
                pruned[i] = true
            }
            var offset = 0
            for p in group {
                let n = p.value.count
                let m = Tensor(pruned[offset..<(offset + n)].map { $0 ? Float(0) : 1 }, shape: p.shape).to(
                    p.value.dtype)
                masks.append((p, m))
                offset += n
            }
        }
        let result = PruningMasks(masks: masks)
        result.apply()
        return result
    }
}
