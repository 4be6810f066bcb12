import Foundation
import SwiftAICore
import SwiftAINN

/// SyncBatchNorm on each rank's shard of a batch against BatchNorm2d on the whole batch in one process, for two
/// training steps and then evaluation: outputs and input gradients of the shard, parameter gradients summed over the
/// ranks (as DDP sums them) and running statistics. Float64 (cumulative running average) and float32 (momentum 0.1),
/// with uneven shards, one of them empty in the second layout.
/// Prints each comparison's worst relative error (max |a − b| / max |b|) over the ranks.
func syncBatchNorm(_ args: [String]) throws {
    let g = try ProcessGroup.mpi()
    let layouts = [
        ("uneven", (0..<g.size).map { $0 + 2 }), ("empty", (0..<g.size).map { $0 == 0 ? 0 : $0 + 1 })
    ]
    var worst: [String: Double] = [:]
    for dtype in [DType.float64, .float32] {
        let tolerance = dtype == .float64 ? 1e-10 : 1e-5
        for (layout, counts) in layouts {
            let start = counts[..<g.rank].reduce(0, +), shard = start..<(start + counts[g.rank])
            let total = counts.reduce(0, +), c = 3
            let reference = BatchNorm2d(c, momentum: dtype == .float64 ? nil : 0.1)
            let layer = BatchNorm2d(c, momentum: reference.momentum), model = convertSyncBatchNorm(Sequential(layer))
            for m in [reference, layer] {
                m.to(dtype)
                m.weight!.setData(Tensor([1.5, 0.5, -1]))
                m.bias!.setData(Tensor([0.1, -0.2, 0.3]))
            }
            func compare(_ a: Tensor, _ b: Tensor, _ what: String) throws {
                try check(a.shape == b.shape, "rank \(g.rank): \(what): shape \(a.shape) vs \(b.shape)")
                let key = "\(dtype) \(layout) \(what)"
                let error = b.count == 0 ? 0 : (a - b).abs().max().item() / Swift.max(b.abs().max().item(), 1e-30)
                worst[key] = Swift.max(worst[key] ?? 0, error)
                try check(error <= tolerance, "rank \(g.rank): \(key): relative error \(error)")
            }
            for step in 0..<2 {
                let gen = Generator(seed: UInt64(100 + step))
                let x = (Tensor.randn([total, c, 4, 3], dtype: dtype, generator: gen) * 2 + 5).contiguous(.channelsLast)
                let v = Tensor.randn([total, c, 4, 3], dtype: dtype, generator: gen)
                let whole = x.requiringGrad(), part = x[shard].requiringGrad()
                let expected = reference(whole)
                (expected * v).sum().backward()
                let y = ProcessGroup.$current.withValue(g) { model(part) }
                (y * v[shard]).sum().backward()
                try compare(y, expected[shard], "output")
                try compare(part.grad!, whole.grad![shard], "input gradient")
                for (p, q) in zip([layer.weight!, layer.bias!], [reference.weight!, reference.bias!]) {
                    var sum = p.grad!.contiguous()
                    g.allReduce(&sum)
                    try compare(sum, q.grad!, "parameter gradient")
                    (p.grad, q.grad) = (nil, nil)
                }
                try compare(layer.runningMean!.value, reference.runningMean!.value, "running mean")
                try compare(layer.runningVar!.value, reference.runningVar!.value, "running var")
                try check(layer.numBatchesTracked!.value.item() == Double(step + 1), "num_batches_tracked")
            }
            model.eval()
            reference.eval()
            let x = Tensor.randn([total, c, 4, 3], dtype: dtype, generator: Generator(seed: 9))
            try compare(ProcessGroup.$current.withValue(g) { model(x[shard]) }, reference(x)[shard], "evaluation")
        }
    }
    let keys = worst.keys.sorted()
    var errors = keys.map { worst[$0]! }
    g.allReduce(&errors, .max)
    report(g, ["size": g.size, "worstRelativeError": Dictionary(uniqueKeysWithValues: zip(keys, errors))])
}
