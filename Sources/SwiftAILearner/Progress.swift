import Foundation

/// fastai's progress display: on a terminal a live bar with ETA during each pass, and after each epoch a row of
/// the results table (`epoch train_loss valid_loss <metrics> time`). Not on a terminal: the table only. In a
/// distributed job, rank 0 alone.
public final class ProgressCallback: Callback {
    public override var order: Int { 70 }
    public let live: Bool
    private let write: (String) -> Void
    private var widths: [Int] = []
    private var passStart = 0.0
    private var lastDraw = 0.0

    /// - Parameters:
    ///   - live: draw the bar (default: when standard output is a terminal).
    ///   - write: where lines go (default standard output, flushed).
    public init(live: Bool? = nil, write: ((String) -> Void)? = nil) {
        self.live = live ?? (isatty(STDOUT_FILENO) != 0)
        self.write =
            write ?? { s in
                FileHandle.standardOutput.write(Data(s.utf8))
            }
    }

    public override func beforeFit(_ learn: Learner) {
        guard learn.group.isMain else { return }
        let names = ["epoch"] + learn.recorder.metricNames + ["time"]
        widths = names.map { Swift.max($0.count, 8) + 2 }
        write(row(names) + "\n")
        // A resumed run's table goes on from the rows before the checkpoint.
        if learn.isResuming {
            for (e, v) in learn.recorder.values.enumerated() {
                write(row(cells(epoch: e, v, learn.recorder.epochTimes[e])) + "\n")
            }
        }
    }

    private func cells(epoch: Int, _ v: [Double], _ time: Double) -> [String] {
        [String(epoch)] + v.map { $0.isNaN ? "nan" : String(format: "%.6f", $0) } + [formatTime(time)]
    }

    private func row(_ cells: [String]) -> String {
        zip(cells, widths).map { $0.padding(toLength: Swift.max($1, $0.count + 1), withPad: " ", startingAt: 0) }
            .joined()
    }

    public override func beforeTrain(_ learn: Learner) { startPass() }
    public override func beforeValidate(_ learn: Learner) { startPass() }

    private func startPass() {
        passStart = now()
        lastDraw = 0
    }

    public override func afterBatch(_ learn: Learner) {
        guard learn.group.isMain else { return }
        guard live else { return }
        let t = now()
        let done = learn.iter + 1, total = learn.nIter
        guard t - lastDraw > 0.1 || done == total else { return }
        lastDraw = t
        let elapsed = t - passStart
        let eta = elapsed / Double(done) * Double(total - done)
        let width = 30, filled = width * done / Swift.max(total, 1)
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        var line =
            """
            \r\(bar) \(String(format: "%5.1f", 100 * Double(done) / Double(Swift.max(total, 1))))% [\(done)/\(total) \
            \(formatTime(elapsed))<\(formatTime(eta))
            """
        if learn.training { line += String(format: " %.4f", learn.recorder.smoothLoss) }
        write(line + "]\u{1B}[K")
    }

    public override func afterEpoch(_ learn: Learner) {
        guard learn.group.isMain else { return }
        if live { write("\r\u{1B}[K") }
        write(
            row(cells(epoch: learn.epoch, learn.recorder.values.last ?? [], learn.recorder.epochTimes.last ?? 0)) + "\n"
        )
    }

    public override func afterCancelFit(_ learn: Learner) {
        guard learn.group.isMain else { return }
        if live { write("\r\u{1B}[K") }
        if let r = learn.stopReason { write("stopped: \(r)\n") }
    }
}
