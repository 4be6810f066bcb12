import Foundation
import Testing
import SwiftAICore
@testable import SwiftAINN
import SwiftAITestSupport

/// SyncBatchNorm in one process: the layer is its BatchNorm, and the synchronised path (all-reduce of one rank)
/// computes the same values and gradients. The multi-process path runs under mpirun (`SyncBatchNormMPITests`).
@Suite struct SyncBatchNormTests {
    /// A BatchNorm2d and a SyncBatchNorm with equal Float64 parameters.
    func pair(momentum: Double?) -> (BatchNorm2d, SyncBatchNorm) {
        let bn = BatchNorm2d(3, momentum: momentum), sync = SyncBatchNorm(3, momentum: momentum)
        for m in [bn, sync] as [BatchNorm] {
            m.to(.float64)
            m.weight!.setData(randn([3], seed: 5) + 1)
            m.bias!.setData(randn([3], seed: 6))
        }
        return (bn, sync)
    }

    @Test(arguments: [0.1, nil] as [Double?])
    func synchronisedPathMatchesBatchNorm2d(momentum: Double?) {
        let (bn, sync) = pair(momentum: momentum)
        for step in 0..<2 {
            let x = (randn([4, 3, 5, 2], seed: 10 + UInt64(step), scale: 2) + 3).contiguous(.channelsLast)
            let v = randn([4, 3, 5, 2], seed: 20 + UInt64(step))
            let xa = x.requiringGrad(), xb = x.requiringGrad()
            let ya = bn(xa), yb = sync.synchronised(xb, .single)
            #expect(yb.isChannelsLast)
            expectClose(yb, ya, rtol: 1e-12, atol: 1e-12, "output, step \(step)")
            (ya * v).sum().backward()
            (yb * v).sum().backward()
            expectClose(xb.grad!, xa.grad!, rtol: 1e-10, atol: 1e-12, "input gradient")
            expectClose(sync.weight!.grad!, bn.weight!.grad!, rtol: 1e-10, atol: 1e-12, "weight gradient")
            expectClose(sync.bias!.grad!, bn.bias!.grad!, rtol: 1e-10, atol: 1e-12, "bias gradient")
            expectClose(sync.runningMean!.value, bn.runningMean!.value, rtol: 1e-12, atol: 1e-12, "running mean")
            expectClose(sync.runningVar!.value, bn.runningVar!.value, rtol: 1e-12, atol: 1e-12, "running var")
            #expect(sync.numBatchesTracked!.value.item() == Double(step + 1))
        }
    }

    @Test func oneProcessAndEvaluationRunBatchNorm() {
        let (bn, sync) = pair(momentum: 0.1)
        let x = randn([4, 3, 2, 2], seed: 30).contiguous(.channelsLast)
        expectClose(sync(x), bn(x), rtol: 0, atol: 0, "training, group of one")
        bn.eval()
        sync.eval()
        expectClose(sync(x), bn(x), rtol: 0, atol: 0, "evaluation")
    }

    @Test func synchronisedPathGradients() {
        let x = randn([3, 2, 2, 3], seed: 40) + 4, w = randn([2], seed: 41) + 1, b = randn([2], seed: 42)
        for layout in [Tensor.MemoryFormat.contiguous, .channelsLast] {
            gradcheck([x, w, b], "SyncBatchNorm \(layout)") { t in
                let sync = SyncBatchNorm(2)
                sync.to(.float64)
                sync.weight!.value = t[1]
                sync.bias!.value = t[2]
                return sync.synchronised(t[0].contiguous(layout), .single)
            }
        }
        gradcheck([randn([5, 2], seed: 43)], "SyncBatchNorm 2-D, no affine, no running stats") { t in
            let sync = SyncBatchNorm(2, affine: false, trackRunningStats: false)
            sync.to(.float64)
            return sync.synchronised(t[0], .single)
        }
    }

    @Test func float32StatisticsSurviveALargeMean() {
        let x = randn([16, 4, 6, 6], seed: 50).to(.float32) + 1000
        let sync = SyncBatchNorm(4), y = sync.synchronised(x.contiguous(.channelsLast), .single)
        let reference = noGrad { x.to(.float64).batchNorm(weight: nil, bias: nil) }
        expectClose(y.to(.float64), reference, rtol: 0, atol: 5e-4, "normalised")
        let mean = x.to(.float64).mean(dims: [0, 2, 3]), variance = x.to(.float64).variance(dims: [0, 2, 3])
        expectClose(sync.runningMean!.value, (mean * 0.1).to(.float32), rtol: 1e-6, atol: 0, "running mean")
        expectClose(sync.runningVar!.value, (variance * 0.1 + 0.9).to(.float32), rtol: 1e-5, atol: 0, "running var")
    }

    @Test func emptyBatchesContributeNothing() {
        let x = Tensor.zeros([0, 3, 2, 2], dtype: .float64).requiringGrad()
        let moments = x.channelMoments()
        #expect(moments.shape == [2, 3] && moments.doubles.allSatisfy { $0 == 0 })
        let y = x.batchNorm(mean: Tensor.zeros([3]), invstd: Tensor.ones([3]), weight: nil, bias: nil)
        #expect(y.shape == [0, 3, 2, 2])
        (moments.sum() + y.sum()).backward()
        #expect(x.grad?.shape == [0, 3, 2, 2])
    }

    @Test func conversionReplacesNestedBatchNormsAndKeepsTheState() {
        let model = Sequential(
            Conv2d(2, 3, kernelSize: 3, padding: 1), BatchNorm2d(3), NormBlock(), Flatten(), BatchNorm1d(12))
        randomiseBatchNorms(model, seed: 7)
        model.eval()
        let x = randn([2, 2, 2, 2], seed: 60).to(.float32)
        let state = model.stateDict(), parameters = model.parameters(), before = model(x)
        #expect(convertSyncBatchNorm(model) === model)
        #expect(model.modules().filter { $0 is SyncBatchNorm }.count == 3)
        #expect(!model.modules().contains { $0 is BatchNorm1d || $0 is BatchNorm2d })
        let after = model.stateDict()
        #expect(after.keys.sorted() == state.keys.sorted())
        for (k, v) in state { expectClose(after[k]!, v, rtol: 0, atol: 0, k) }
        #expect(zip(model.parameters(), parameters).allSatisfy { $0 === $1 })
        expectClose(model(x), before, rtol: 0, atol: 0, "output")
        convertSyncBatchNorm(model)
        #expect(model.modules().filter { $0 is SyncBatchNorm }.count == 3)
        // Training moves the replaced layers' buffers.
        model.train()
        let inner = model[2] as! NormBlock, tracked = inner.norm.numBatchesTracked!.value.item()
        _ = model(x)
        #expect(inner.norm.numBatchesTracked!.value.item() == tracked + 1)
    }
}

/// A user-written module holding a BatchNorm2d in a typed property.
private final class NormBlock: Module {
    let norm = BatchNorm2d(3)
    let conv = Conv2d(3, 3, kernelSize: 1)
    override func forward(_ x: Tensor) -> Tensor { conv(norm(x)).relu() }
}
