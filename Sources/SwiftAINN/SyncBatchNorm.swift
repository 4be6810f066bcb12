import SwiftAICore

/// Batch normalisation whose training statistics cover the batches of every process of the running job (PyTorch's
/// `nn.SyncBatchNorm`), so that small per-process batches normalise as one large batch.
///
/// In training mode, when ``ProcessGroup/current`` has more than one rank, each rank's per-channel Σx, Σx² and item
/// count travel in one differentiable all-reduce (``SwiftAICore/Tensor/allReduced(_:)``), and backward all-reduces
/// their gradient; every rank must call the layer, and run backward, together. Ranks may hold different numbers of
/// items. The running statistics move with the mean and unbiased variance of the whole batch, identically on every
/// rank. In evaluation mode, or in a single process, it is the ``BatchNorm`` it stands for. The group is not stored:
/// the layer reads it from the context (the Learner sets it for a distributed fit). State-dict names are
/// ``BatchNorm``'s.
public final class SyncBatchNorm: BatchNorm {
    /// A new layer for inputs `[N, C, …]` of 2 to 5 dimensions.
    public init(
        _ numFeatures: Int, eps: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true,
        trackRunningStats: Bool = true
    ) {
        super.init(
            numFeatures, eps: eps, momentum: momentum, affine: affine, trackRunningStats: trackRunningStats,
            ranks: [2, 3, 4, 5])
    }

    /// Stands for `norm`: the same ``Parameter`` and ``Buffer`` objects, settings and accepted input shapes.
    public init(_ norm: BatchNorm) { super.init(sharing: norm) }

    public override func forward(_ x: Tensor) -> Tensor {
        let group = ProcessGroup.current
        guard training, group.size > 1 else { return super.forward(x) }
        checkInput(x)
        return synchronised(x, group)
    }

    /// Training-mode batch norm over the union of the ranks' batches (any group size, one included).
    func synchronised(_ x: Tensor, _ group: ProcessGroup) -> Tensor {
        let c = x.shape[1]
        let local = Tensor.cat([x.channelMoments().flatten(), Tensor([Double(x.count / Swift.max(c, 1))])])
        let total = local.allReduced(group)
        let n = total[2 * c].item()
        require(
            n > 1,
            "SyncBatchNorm: expected more than 1 value per channel when training, got \(Int(n)) on \(group.size) ranks")
        let mean = total[0..<c] / n
        let variance = (total[c..<(2 * c)] / n - mean * mean).clamp(min: 0)
        if let rm = runningMean, let rv = runningVar, let nb = numBatchesTracked {
            let tracked = nb.value.item() + 1
            nb.value = Tensor(scalar: Int64(tracked))
            let m = momentum ?? 1 / tracked
            noGrad {
                rm.value = (rm.value * (1 - m) + mean.to(rm.value.dtype) * m).detached()
                rv.value = (rv.value * (1 - m) + (variance * (n / (n - 1))).to(rv.value.dtype) * m).detached()
            }
        }
        return x.batchNorm(mean: mean, invstd: (variance + eps).pow(-0.5), weight: weight?.value, bias: bias?.value)
    }
}

/// Puts a ``SyncBatchNorm`` in place of every ``BatchNorm1d`` and ``BatchNorm2d`` of `model`, wherever it is stored
/// (PyTorch's `SyncBatchNorm.convert_sync_batchnorm`; ``Module/replaceModules(_:)``). Each shares the replaced
/// layer's parameters and buffers, so the state dict, an optimizer built earlier and saved weights are unchanged.
/// Returns `model`.
@discardableResult
public func convertSyncBatchNorm(_ model: Module) -> Module {
    model.replaceModules { m in
        guard let norm = m as? BatchNorm, !(norm is SyncBatchNorm) else { return nil }
        return SyncBatchNorm(norm)
    }
    return model
}
