import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

@Suite struct OptimTests {
    /// Runs 10 steps on sum((w·sin w − target)²) as the fixture did and compares every step.
    func trajectory(_ name: String, _ make: ([Parameter]) -> Optimizer) throws {
        guard let f = try loadFixture("optim") else { return }
        let start = f.tensors["optim_\(name).start"]!, target = f.tensors["optim_\(name).target"]!
        let expected = f.tensors["optim_\(name).trajectory"]!
        let w = Parameter(start)
        let opt = make([w])
        for step in 0..<10 {
            let loss = (w.value * w.value.sin() - target).squared().sum()
            loss.backward()
            opt.step()
            opt.zeroGrad()
            expectClose(w.value, expected[step], rtol: 1e-5, atol: 1e-6, "\(name) step \(step)")
        }
    }

    @Test func sgdFollowsPyTorch() throws {
        try trajectory("sgd") { SGD($0, lr: 0.1) }
        try trajectory("sgd_momentum") { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-2) }
    }

    @Test func rmsPropAdamAdamWFollowPyTorch() throws {
        try trajectory("rmsprop") { RMSProp($0, lr: 0.01, alpha: 0.99, eps: 1e-8) }
        try trajectory("adam") { Adam($0, lr: 0.01, betas: (0.9, 0.999), eps: 1e-8) }
        try trajectory("adamw") { AdamW($0, lr: 0.01, betas: (0.9, 0.99), eps: 1e-5, weightDecay: 0.01) }
    }

    @Test func fusedAdamMatchesTensorForm() {
        // Float32 contiguous parameters take the fused kernel; Float64 ones the tensor expressions. Same steps.
        for decoupled in [false, true] {
            let start = Tensor.randn([3, 5], generator: Generator(seed: 7))
            let p32 = Parameter(start), p64 = Parameter(start.to(.float64))
            let make: ([Parameter]) -> Optimizer = {
                decoupled
                    ? AdamW($0, lr: 0.05, betas: (0.9, 0.99), eps: 1e-5, weightDecay: 0.1)
                    : Adam($0, lr: 0.05, betas: (0.9, 0.99), eps: 1e-5, weightDecay: 0.1)
            }
            let o32 = make([p32]), o64 = make([p64])
            for _ in 0..<5 {
                for (p, o) in [(p32, o32), (p64, o64)] {
                    (p.value * p.value.sin()).sum().backward()
                    o.step()
                    o.zeroGrad()
                }
                expectClose(p32.value, p64.value.to(.float32), rtol: 1e-5, atol: 1e-6, "decoupled \(decoupled)")
            }
        }
    }

    @Test func sgdVariantsMatchHandComputation() {
        // Nesterov and dampening, checked against the update rule written out by hand.
        let w = Parameter(Tensor([Float(1), -2]))
        let opt = SGD([w], lr: 0.1, momentum: 0.9, dampening: 0.5, nesterov: true)
        var buf: [Float] = []
        var ref: [Float] = [1, -2]
        for step in 0..<3 {
            let loss = (w.value * w.value).sum()
            loss.backward()
            let g = ref.map { 2 * $0 }
            buf = step == 0 ? g : zip(buf, g).map { 0.9 * $0 + 0.5 * $1 }
            let d = zip(g, buf).map { $0 + 0.9 * $1 }
            ref = zip(ref, d).map { $0 - 0.1 * $1 }
            opt.step()
            opt.zeroGrad()
            #expect(zip(w.value.floats, ref).allSatisfy { abs($0 - $1) < 1e-6 })
        }
    }

    @Test func paramGroupsSkipWeightDecayOnNormAndBias() {
        let model = Sequential(Linear(4, 3), BatchNorm1d(3), Linear(3, 2, bias: false))
        let (decay, noDecay) = weightDecaySplit(model)
        #expect(decay.count == 2 && noDecay.count == 3)
        let opt = AdamW.fastai(model, lr: 1e-2)
        #expect(opt.paramGroups.count == 2)
        #expect(opt.paramGroups[0].hyper == Hyper(lr: 1e-2, mom: 0.9, sqrMom: 0.99, eps: 1e-5, wd: 0.01))
        #expect(opt.paramGroups[1].hyper.wd == 0)
        // With zero gradients only decoupled weight decay moves weights: BN/bias must not move.
        for p in model.parameters() { p.grad = Tensor.zeros(p.shape) }
        let before = model.parameters().map(\.value.floats)
        opt.step()
        let after = model.parameters().map(\.value.floats)
        let moved = zip(before, after).map { $0 != $1 }
        let names = model.namedParameters().map(\.0)
        #expect(
            Dictionary(uniqueKeysWithValues: zip(names, moved)) == [
                "0.weight": true, "0.bias": false, "1.weight": false, "1.bias": false, "2.weight": true
            ])
        // Per-group hyper-parameters can be changed (what schedules do each step).
        opt.set(\.lr, 0.5)
        #expect(opt.paramGroups.allSatisfy { $0.hyper.lr == 0.5 })
        opt.paramGroups[1].hyper.lr = 0.1
        #expect(opt.paramGroups[0].hyper.lr == 0.5 && opt.paramGroups[1].hyper.lr == 0.1)
    }

    @Test func frozenAndUnusedParametersAreSkipped() {
        let a = Parameter(Tensor([Float(1)])), b = Parameter(Tensor([Float(1)]), requiresGrad: false)
        let opt = SGD([a, b], lr: 0.1)
        (a.value * b.value * 3).sum().backward()
        opt.step()
        #expect(a.value.floats == [0.7] && b.value.floats == [1])
        opt.zeroGrad()
        #expect(a.grad == nil)
        opt.step()  // no gradients: nothing moves
        #expect(a.value.floats == [0.7])
    }

    @Test func autoAnnealerDropsLearningRateWhenSquaredGradientsHalve() {
        // Loss (w − 3)²: gradients shrink as w approaches 3, so the squared-gradient average keeps halving.
        let w = Parameter(Tensor([Float(0)]))
        let opt = AutoAnnealAdam([w], lr: 0.3, betas: (0.9, 0.99))
        var lrs: [Double] = []
        var marks: [Double] = []
        for _ in 0..<200 {
            (w.value - 3).squared().sum().backward()
            opt.step()
            opt.zeroGrad()
            lrs.append(opt.paramGroups[0].hyper.lr)
            marks.append(opt.lastAverage)
        }
        let drops = zip(lrs, lrs.dropFirst()).filter { $1 < $0 }
        #expect(!drops.isEmpty)
        #expect(drops.allSatisfy { abs($0.0 / $0.1 - 4) < 1e-9 })  // always by a factor 4
        #expect(w.value.item() > 2.5)  // it still made progress towards 3 before the rate got small
        // Every drop happened at a step whose average was at most half the previous mark.
        var mark = marks[0]
        for i in 1..<lrs.count where lrs[i] < lrs[i - 1] {
            #expect(marks[i] <= mark / 2 + 1e-12)
            mark = marks[i]
        }
    }

    @Test func optimizerStateRestores() {
        let w = Parameter(Tensor([Float(1), 2]))
        let opt = Adam([w], lr: 0.1)
        (w.value * w.value).sum().backward()
        let snap = opt.stateSnapshot()
        let value = w.value.floats
        opt.step()
        opt.restore(snap)
        w.setData(Tensor(value))
        #expect(!opt.hasState && opt.stepCount == 0)
    }
}

@Suite struct ScheduleTests {
    @Test func pytorchOneCycleAndCosineMatchFixture() throws {
        guard let f = try loadFixture("optim") else { return }
        let (lr, mom) = Schedule.oneCycleLR(maxLR: 0.06, totalSteps: 100)
        let cos = Schedule.cosineAnnealing(base: 0.06, tMax: 100)
        let w = Parameter(Tensor.zeros([1]))
        let opt = AdamW([w], lr: 0.06)
        let sched = HyperScheduler(opt, totalSteps: 100, [(\.lr, lr), (\.mom, mom)])
        var lrs: [Double] = [], moms: [Double] = []
        for _ in 0..<100 {
            lrs.append(opt.paramGroups[0].hyper.lr)
            moms.append(opt.paramGroups[0].hyper.mom)
            sched.step()
        }
        expectClose(Tensor(lrs), f.tensors["schedule_onecycle.lr"]!, rtol: 1e-10, atol: 1e-14, "one-cycle lr")
        expectClose(Tensor(moms), f.tensors["schedule_onecycle.beta1"]!, rtol: 1e-10, atol: 1e-14, "one-cycle beta1")
        expectClose(
            Tensor((0..<100).map { cos($0, 100) }), f.tensors["schedule_cosine.lr"]!, rtol: 1e-10, atol: 1e-14,
            "cosine lr")
        #expect(f.tensors["schedule_cosine.beta1"]!.doubles.allSatisfy { $0 == 0.9 })
    }

    @Test func fastaiOneCycleShape() {
        let (lr, mom) = Schedule.fastaiOneCycle(lrMax: 0.02)
        let n = 1000
        #expect(abs(lr(0, n) - 0.02 / 25) < 1e-12)
        #expect(abs(lr(250, n) - 0.02) < 1e-12)  // peak at pct_start 0.25
        #expect(abs(lr(n, n) - 0.02 / 1e5) < 1e-12)
        #expect(abs(mom(0, n) - 0.95) < 1e-12 && abs(mom(250, n) - 0.85) < 1e-12 && abs(mom(n, n) - 0.95) < 1e-12)
        let values = (0...n).map { lr($0, n) }
        #expect(zip(values[..<250], values[1...250]).allSatisfy { $0 <= $1 })
        #expect(zip(values[250...], values[251...]).allSatisfy { $0 >= $1 })
        // fastai's SchedCos midpoint
        #expect(abs(Schedule.cos(1, 3).at(0.5) - 2) < 1e-12)
    }

    @Test func simpleSchedulesAndComposition() {
        #expect(abs(Schedule.linear(1, 3).at(0.25) - 1.5) < 1e-12)
        #expect(abs(Schedule.exponential(1, 100).at(0.5) - 10) < 1e-9)
        #expect(abs(Schedule.poly(0, 1, power: 2).at(0.5) - 0.25) < 1e-12)
        #expect(Schedule.constant(0.7)(5, 10) == 0.7)
        let step = Schedule.stepDecay(base: 1, stepSize: 10, gamma: 0.5)
        #expect(step(9, 100) == 1 && step(10, 100) == 0.5 && step(25, 100) == 0.25)
        #expect(abs(Schedule.exponentialDecay(base: 2, gamma: 0.9)(3, 10) - 2 * 0.729) < 1e-12)
        let warm = Schedule.linearWarmup(steps: 10, then: Schedule.cosineAnnealing(base: 1, tMax: 90))
        #expect(warm(0, 100) == 0 && abs(warm(5, 100) - 0.5) < 1e-12 && warm(10, 100) == 1)
        #expect(abs(warm(55, 100) - 0.5) < 1e-12)
        let combined = Schedule.combine([0.5, 0.5], [.linear(0, 1), .constant(5)])
        #expect(abs(combined(25, 100) - 0.5) < 1e-12 && combined(75, 100) == 5)
        let phases = Schedule.constant(1).then(after: 3, .linear(1, 0))
        #expect(phases(2, 10) == 1 && abs(phases(3, 10) - 1) < 1e-12)
        let custom = Schedule { i, n in Double(n - i) }
        #expect(custom(3, 10) == 7)
    }
}
