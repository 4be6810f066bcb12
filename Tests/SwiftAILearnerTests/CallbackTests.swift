import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAIOptim
import SwiftAITestSupport

func isPNG(_ path: String) -> Bool {
    guard let d = FileManager.default.contents(atPath: path), d.count > 100 else { return false }
    return Array(d.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
}

@Suite struct CallbackTests {
    func learner(_ callbacks: [Callback] = [], lr: Double = 1e-2, model: Module = mlp()) -> Learner {
        Learner(
            model: model, dls: syntheticData(train: 256, valid: 64), lr: lr, metrics: [.accuracy, .errorRate],
            callbacks: callbacks, progress: false)
    }

    @Test func earlyStoppingSaveModelAndCSV() throws {
        let dir = tempDir("cbs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A learning rate of 0 never improves: early stopping after `patience` epochs.
        let stop = EarlyStopping(monitor: "valid_loss", patience: 2)
        let l1 = learner([stop], lr: 0)
        try l1.fit(10)
        #expect(l1.recorder.values.count == 3)
        #expect(l1.stopReason?.contains("early stopping: valid_loss did not improve for 2 epoch(s)") == true)
        // SaveModel keeps the best epoch's weights and reloads them at the end.
        let path = dir + "/best.safetensors"
        let save = SaveModel(path: path, monitor: "accuracy")
        let csv = CSVLogger(path: dir + "/history.csv")
        let l2 = learner([save, csv], lr: 3e-2)
        try l2.fit(3)
        #expect(FileManager.default.fileExists(atPath: path))
        let best = l2.recorder.values.map { $0[2] }.max()!
        #expect(save.best == best)
        let fresh = mlp(seed: 9)
        let meta = try fresh.load(from: path)
        #expect(Double(meta["accuracy"]!) == best)
        #expect(
            fresh.stateDict().keys.sorted().allSatisfy {
                fresh.stateDict()[$0]!.doubles == l2.model.stateDict()[$0]!.doubles
            })
        let lines = try String(contentsOfFile: dir + "/history.csv", encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "epoch,train_loss,valid_loss,accuracy,error_rate,time" && lines.count == 4)
        #expect(lines[1].hasPrefix("0,"))
        let acc = Double(lines[1].split(separator: ",")[3])!, err = Double(lines[1].split(separator: ",")[4])!
        #expect(abs(acc + err - 1) < 1e-9)
    }

    @Test func terminateOnNaNKeepsLastGoodWeights() throws {
        /// Turns the loss into NaN at training batch 2 of epoch 1.
        final class Poison: Callback {
            override var order: Int { -20 }
            var snapshot: [String: Tensor] = [:]
            override func beforeBatch(_ learn: Learner) {
                if learn.training { snapshot = learn.model.stateDict().mapValues { $0.clone() } }
            }
            override func afterPredict(_ learn: Learner) {
                if learn.training && learn.epoch == 1 && learn.iter == 2 { learn.preds = learn.preds! * Double.nan }
            }
        }
        let poison = Poison()
        let learn = learner([TerminateOnNaN(), poison])
        try learn.fit(3)
        #expect(
            learn.stopReason?.contains("loss is NaN at epoch 1, batch 2 (training)") == true,
            "\(learn.stopReason ?? "-")")
        for (k, v) in learn.model.stateDict() {
            #expect(v.doubles == poison.snapshot[k]!.doubles, "\(k) changed after NaN")
        }
        #expect(learn.recorder.values.count == 1)
    }

    /// Ctrl-C (SIGINT, raised here from the loop itself) stops after the current batch instead of killing the run.
    @Test func interruptStopsAfterTheCurrentBatch() async {
        await #expect(processExitsWith: .success) {
            final class RaiseAt: Callback {
                override func afterStep(_ learn: Learner) { if learn.trainIter == 2 { raise(SIGINT) } }
            }
            let learn = Learner(
                model: mlp(), dls: syntheticData(train: 512, valid: 64), callbacks: [Interrupt(), RaiseAt()],
                progress: false)
            try? learn.fit(3)
            guard learn.stopReason == "interrupted (Ctrl-C) at epoch 0, batch 2", learn.trainIter == 3 else {
                fatalError("stop reason \(learn.stopReason ?? "-") after \(learn.trainIter) batches")
            }
        }
    }

    /// A fit stopped inside its first training pass still reports the throughput of the batches it ran.
    @Test func throughputCountsAPassCutShort() throws {
        final class StopAt: Callback {
            override func afterBatch(_ learn: Learner) throws {
                if learn.training && learn.iter == 3 { throw CancelFit("test") }
            }
        }
        let learn = learner([StopAt()])
        try learn.fit(2)
        let rec = learn.recorder
        #expect(rec.values.isEmpty)
        #expect(rec.trainTimes.count == 1)
        #expect(rec.trainItems > 0 && rec.trainItems == rec.rawLosses.count * learn.dls.train.batchSize)
        #expect(rec.trainItemsPerSecond.isFinite && rec.trainItemsPerSecond > 0)
    }

    @Test func gradientClipBoundsTheNorm() throws {
        let clip = GradientClip(maxNorm: 0.05)
        final class Norm: Callback {
            override var order: Int { 10 }
            var norms: [Double] = []
            override func beforeStep(_ learn: Learner) {
                norms.append(
                    learn.model.parameters().reduce(0.0) { $0 + ($1.grad! * $1.grad!).sum().item() }.squareRoot())
            }
        }
        let norm = Norm()
        try learner([clip, norm], lr: 1e-2).fit(1)
        #expect(clip.lastNorm > 0.05)
        #expect(norm.norms.allSatisfy { $0 <= 0.05 * 1.0001 })
    }

    @Test func lrFindSuggestsAndRestores() throws {
        let learn = learner()
        let before = learn.model.stateDict().mapValues { $0.clone() }
        let s = try learn.lrFind(numIt: 60)
        for (k, v) in learn.model.stateDict() { #expect(v.doubles == before[k]!.doubles, "\(k) not restored") }
        #expect(learn.opt == nil)
        #expect(learn.recorder.lrs.first! == 1e-7 && learn.recorder.lrs.count <= 60)
        for v in [s.minimum, s.steep, s.valley, s.slide] { #expect(v > 1e-7 && v < 10) }
        #expect(s.valley > 1e-4 && s.valley < 1)
        // Divergence ends the run before numIt.
        #expect(learn.recorder.lrs.count == 60 || learn.recorder.losses.last! > 4 * learn.recorder.losses.min()!)
        let dir = tempDir("lrfind")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try s.plot(to: dir + "/lr.png")
        #expect(isPNG(dir + "/lr.png"))
        // Suggestions on a known curve: steepest fall between points 20 and 21, lowest at 34, then divergence.
        let lrs = (0..<50).map { 1e-5 * pow(10, Double($0) / 10) }
        let losses: [Double] = (0..<50).map { i in
            let x = Double(i)
            if i < 35 { return 1.5 - tanh((x - 20.5) / 4) }
            let d = (x - 34) / 5
            return 0.5 + d * d
        }
        let k = SuggestedLRs(lrs: lrs, losses: losses)
        #expect(k.minimum == lrs[34] / 10)
        #expect(k.steep == lrs[20])
        #expect(k.valley == lrs[15])  // longest valley ends at 34 with length 35: start −1, then −1 + 11 + 5
        #expect(k.slide > lrs[0] && k.slide < lrs[49])
    }

    @Test func summaryMatchesTheModel() throws {
        let learn = Learner(
            model: FashionMNISTModel.cnn.make(generator: Generator(seed: 1)),
            dls: DataLoaders(
                train: DataLoader(Tensor.randn([64, 1, 28, 28]), Tensor.randint(0, 10, [64]), batchSize: 32),
                valid: DataLoader(Tensor.randn([32, 1, 28, 28]), Tensor.randint(0, 10, [32]), batchSize: 32)),
            progress: false)
        let before = learn.model.stateDict().mapValues { $0.clone() }
        let s = try learn.summary()
        #expect(s.rows.count == 6 && s.totalParams == 30_274)
        #expect(s.rows[0].input == [32, 1, 28, 28] && s.rows[0].output == [32, 8, 14, 14])
        // conv 1→8 3×3 on a 14×14 output: 72·196 weights-times-positions + 24 BN/bias = 0.0141 MFLOPs (lesson's rule)
        #expect(abs(s.rows[0].mflops - (72.0 * 196 + 16) / 1e6) < 1e-9)
        #expect(
            s.description.hasPrefix("|Module|Input|Output|Num params|MFLOPS|")
                && s.description.contains("Tot params: 30274"))
        for (k, v) in learn.model.stateDict() { #expect(v.doubles == before[k]!.doubles, "\(k)") }
    }

    @Test func activationStatsAndPlots() throws {
        let stats = ActivationStats()
        let learn = learner([stats])
        try learn.fit(1)
        #expect(stats.stats.count == 1 && stats.names == ["1"])
        let s = stats.stats[0]
        #expect(s.means.count == learn.dls.train.count && s.histograms.allSatisfy { $0.count == 40 })
        // Every activation of a 64 × 32 batch lands in a bin (all |a| < 10 here).
        #expect(s.histograms.allSatisfy { abs($0.reduce(0, +) - 64 * 32) < 1e-9 })
        #expect(s.nearZero.allSatisfy { $0 > 0.3 && $0 <= 1 })  // ReLU: about half are exactly 0
        let dir = tempDir("plots")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try stats.plotStats(to: dir + "/stats.png")
        try stats.colorDim(to: dir + "/colordim.png")
        try stats.deadChart(to: dir + "/dead.png")
        try learn.recorder.plotLoss(to: dir + "/loss.png")
        try learn.recorder.plotSchedule(to: dir + "/sched.png")
        for f in ["stats", "colordim", "dead", "loss", "sched"] { #expect(isPNG(dir + "/\(f).png"), "\(f)") }
        #expect(throws: PlotError.self) { try learn.recorder.plotLoss(to: "/nonexistent-dir/x.png") }
    }

    @Test func adviceReadsTheHistory() {
        let overfit = Advice.read(
            train: [0.5, 0.4, 0.3, 0.2], valid: [0.45, 0.40, 0.42, 0.47], firstBatchLoss: 2, classes: 10,
            stopReason: nil)
        #expect(overfit?.contains("overfitting") == true)
        let stuck = Advice.read(
            train: [2.31, 2.30], valid: [2.30, 2.30], firstBatchLoss: 2.3, classes: 10, stopReason: nil)
        #expect(stuck?.contains("stuck near ln(10) = 2.30") == true)
        let diverged = Advice.read(
            train: [0.5], valid: [.nan], firstBatchLoss: 2, classes: 10, stopReason: "loss is nan at epoch 0, batch 3")
        #expect(diverged?.contains("diverged") == true)
        let rising = Advice.read(train: [4.0], valid: [4.2], firstBatchLoss: 2.3, classes: 10, stopReason: nil)
        #expect(rising?.contains("too high") == true)
        let fine = Advice.read(
            train: [0.6, 0.4, 0.3], valid: [0.5, 0.4, 0.33], firstBatchLoss: 2.3, classes: 10, stopReason: nil)
        #expect(fine?.contains("not overfitting") == true)
        let early = Advice.read(train: [1.05], valid: [1.40], firstBatchLoss: 2.3, classes: 10, stopReason: nil)
        #expect(early?.contains("too early to call overfitting") == true)
    }
}
