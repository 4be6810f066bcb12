// Differentiable collectives: ops whose forward and backward talk to the other ranks of a ``ProcessGroup``.

extension Tensor {
    /// The sum of this tensor over the ranks of `group`, as a new dense tensor (this one is unchanged).
    ///
    /// Differentiable: the gradient is the sum of the ranks' gradients, so every rank must run backward through it,
    /// in the same order as the other ranks (one all-reduce each way). With one rank it is `self`.
    public func allReduced(_ group: ProcessGroup = .current) -> Tensor {
        guard group.size > 1 else { return self }
        var y = detached().contiguous()
        group.allReduce(&y)
        if Tensor.needsGrad(self) {
            y.recordGrad("all_reduce", [self]) { g in
                var sum = g.contiguous()
                group.allReduce(&sum)
                return [sum]
            }
        }
        return y
    }
}
