import Foundation
import Testing
import SwiftAICore
import SwiftAIData
import SwiftAILearner
import SwiftAINN
import SwiftAITestSupport
@testable import SwiftAIVision

/// 14 items over 4 classes: item `i` predicts `decoded[i]` with probability 0.55 + 0.03 i (the rest shared equally),
/// its loss is −log p(target). The expected values come from fastai 2.8.12's own methods on the same numbers:
///
///     import math, torch
///     from fastai.interpret import ClassificationInterpretation
///     vocab = ['cat', 'dog', 'fox', 'owl']
///     targs = [0,0,0,1,1,1,1,2,2,2,3,3,3,3]
///     dec   = [0,1,1,1,0,2,1,0,2,0,3,2,1,3]
/// preds = torch.tensor([[0.55+0.03*i if c == d else (0.45-0.03*i)/3 for c in range(4)] for i, d in enumerate(dec)],
///                          dtype=torch.float64)
///     losses = torch.tensor([-math.log(preds[i, t]) for i, t in enumerate(targs)])
///     class DL: pass
///     dl = DL(); dl.vocab = [vocab]                # fastai takes the last of a listy vocab
///     class Learn:
///         def get_preds(self, **kw): return preds, torch.tensor(targs), preds.argmax(1)
///     interp = ClassificationInterpretation(Learn(), dl, losses)
///     interp.confusion_matrix()   # [[1,2,0,0],[1,2,1,0],[2,0,1,0],[0,1,1,2]]
/// interp.most_confused()      #
/// [('cat','dog',2),('fox','cat',2),('dog','cat',1),('dog','fox',1),('owl','dog',1),('owl','fox',1)]
///     interp.most_confused(2)     # [('cat','dog',2),('fox','cat',2)]
///     interp.top_losses(5)        # [3.5066, 3.2189, 2.8134, 2.5257, 2.3026], [12, 11, 9, 7, 5]
///     interp.top_losses(3, largest=False)  # [0.0619, 0.1625, 0.2357], [13, 10, 8]
private let targs = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
private let dec = [0, 1, 1, 1, 0, 2, 1, 0, 2, 0, 3, 2, 1, 3]

private func constructed() throws -> ClassificationInterpretation {
    let rows = dec.enumerated().map { i, d in
        (0..<4).map { c in c == d ? 0.55 + 0.03 * Double(i) : (0.45 - 0.03 * Double(i)) / 3 }
    }
    let losses = targs.enumerated().map { i, t in -log(rows[i][t]) }
    return try ClassificationInterpretation(
        preds: Tensor(rows: rows), targets: Tensor(targs.map(Int64.init)),
        losses: Tensor(losses), vocab: ["cat", "dog", "fox", "owl"])
}

/// The 37 Oxford-IIIT Pet breeds.
private let pets = [
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon", "Persian",
    "Ragdoll", "Russian_Blue", "Siamese", "Sphynx", "american_bulldog", "american_pit_bull_terrier",
    "basset_hound", "beagle", "boxer", "chihuahua", "english_cocker_spaniel", "english_setter",
    "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
    "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed", "scottish_terrier",
    "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier"
]

@Suite struct InterpretationTests {
    @Test func confusionMatrixAndMostConfusedMatchFastai() throws {
        let interp = try constructed()
        #expect(interp.decoded == dec && interp.targets == targs)
        #expect(interp.confusionMatrix() == [[1, 2, 0, 0], [1, 2, 1, 0], [2, 0, 1, 0], [0, 1, 1, 2]])
        let all = interp.mostConfused()
        #expect(
            all.map { "\($0.actual)>\($0.predicted)=\($0.count)" }
                == ["cat>dog=2", "fox>cat=2", "dog>cat=1", "dog>fox=1", "owl>dog=1", "owl>fox=1"])
        #expect(interp.mostConfused(minVal: 2).map { "\($0.actual)>\($0.predicted)" } == ["cat>dog", "fox>cat"])
        #expect(interp.mostConfused(minVal: 3).isEmpty)
    }

    @Test func topLossesMatchFastaiAndKeepItemOrderOnTies() throws {
        let interp = try constructed()
        let top = interp.topLosses(5)
        #expect(top.map(\.index) == [12, 11, 9, 7, 5])
        for (l, e) in zip(top.map(\.loss), [3.5066, 3.2189, 2.8134, 2.5257, 2.3026]) { #expect(abs(l - e) < 1e-4) }
        let low = interp.topLosses(3, largest: false)
        #expect(low.map(\.index) == [13, 10, 8])
        for (l, e) in zip(low.map(\.loss), [0.0619, 0.1625, 0.2357]) { #expect(abs(l - e) < 1e-4) }
        #expect(interp.topLosses().count == 14 && interp.topLosses(100).count == 14)
        // Ties in item order (torch.topk's tie order is unspecified); NaN is the largest value, as in torch.topk.
        let tied = try ClassificationInterpretation(
            preds: Tensor.zeros([6, 2]), targets: Tensor([Int64](repeating: 0, count: 6)),
            losses: Tensor([0.5, 2, 0.5, 2, .nan, 1.0]), vocab: ["a", "b"])
        #expect(tied.topLosses().map(\.index) == [4, 1, 3, 5, 0, 2])
        #expect(tied.topLosses(largest: false).map(\.index) == [0, 2, 5, 1, 3, 4])
    }

    @Test func inputsThatDoNotFitAreTypedErrors() throws {
        let p = Tensor.zeros([3, 2])
        func make(_ t: Tensor, _ l: Tensor, _ v: [String]) throws {
            _ = try ClassificationInterpretation(preds: p, targets: t, losses: l, vocab: v)
        }
        let t = Tensor([Int64(0), 1, 1]), l = Tensor.zeros([3])
        // target out of range
        #expect(throws: InterpretationError.self) { try make(Tensor([Int64(0), 2, 1]), l, ["a", "b"]) }
        #expect(throws: InterpretationError.self) { try make(t, l, ["a", "b", "c"]) }  // vocab size
        #expect(throws: InterpretationError.self) { try make(t, Tensor.zeros([2]), ["a", "b"]) }  // losses count
        #expect(throws: InterpretationError.self) { try make(Tensor.zeros([3, 2]), l, ["a", "b"]) }  // multi-label
        let unnamed = try ClassificationInterpretation(preds: p, targets: t, losses: l, vocab: [])
        #expect(unnamed.vocab == ["0", "1"])
        #expect(throws: InterpretationError.noImages("this interpretation was built from values, without a loader")) {
            try unnamed.plotTopLosses(to: "/tmp/never.png")
        }
    }

    @Test func a37ClassConfusionMatrixIsLegibleAndBluesColoured() throws {
        // Item i: actual class i % 37, predicted (i + i / 37) % 37: each class's 4 items go to itself and the next 3
        // classes.
        let n = 37, count = 4 * n
        var rows = [[Double]](repeating: [Double](repeating: 0, count: n), count: count)
        for i in 0..<count { rows[i][(i + i / n) % n] = 1 }
        let interp = try ClassificationInterpretation(
            preds: Tensor(rows: rows), targets: Tensor((0..<count).map { Int64($0 % n) }),
            losses: Tensor.zeros([count]), vocab: pets)
        let cm = interp.confusionMatrix()
        #expect(cm[0][0] == 1 && cm[0][1] == 1 && cm[36][0] == 1 && cm.joined().reduce(0, +) == count)
        let dir = try makeTemporaryDirectory("interp")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try MatrixLayout(vocab: pets, title: "Confusion matrix", widest: "1").cell == 28)
        for normalize in [false, true] {
            let path = dir + "/cm\(normalize).png"
            try interp.plotConfusionMatrix(to: path, normalize: normalize)
            // Normalized cells ("0.25") are widened so their text fits at 10 px.
            let layout = try MatrixLayout(vocab: pets, title: "Confusion matrix", widest: normalize ? "0.25" : "1")
            #expect(layout.labelSize >= 12 && (normalize ? layout.cell > 28 : layout.cell == 28))
            let img = try Image.read(path)
            #expect(img.width == layout.width && img.height == layout.height)
            #expect(img.width >= n * 28 + 150 && img.height >= n * 28 + 150)
            // Every cell holds 1 (0.25 normalized) or 0: a full cell's corner is Blues' darkest colour, an empty one's
            // its lightest.
            func pixel(_ r: Int, _ c: Int) -> [UInt8] {
                let y = Int(layout.top + Double(r) * layout.cell) + 2,
                    x = Int(layout.left + Double(c) * layout.cell) + 2
                return (0..<3).map { img[y, x, $0] }
            }
            #expect(pixel(0, 0) == [8, 48, 107] && pixel(0, 3) == [8, 48, 107] && pixel(0, 4) == [247, 251, 255])
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/cmfalse.png.tmp-\(getpid()).png"))
    }

    @Test func longTitlesAreBrokenToFitTheirCell() throws {
        let canvas = try Canvas(width: 1, height: 1)
        let short = fitTitle("cat/dog / 2.31 / 0.10", width: 192, canvas: canvas)
        #expect(short.lines == ["cat/dog / 2.31 / 0.10"] && short.size == 13)
        let long = fitTitle(
            "american_pit_bull_terrier/staffordshire_bull_terrier / 2.31 / 0.10", width: 192, canvas: canvas)
        #expect(long.lines == ["american_pit_bull_terrier/", "staffordshire_bull_terrier", "2.31 / 0.10"])
        #expect(long.size >= 10 && long.lines.allSatisfy { canvas.width(of: $0, size: long.size) <= 192.001 })
    }

    @Test func interpretationOfATrainedImageLearner() throws {
        let root = try makePetsFolder(perLabel: 6)
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let learn = try tinyImageLearner(root)
        let dls = learn.dls
        try learn.fit(1)
        let interp = try ClassificationInterpretation(learn)
        let n = dls.valid.itemCount
        #expect(n >= 2 && interp.preds.shape == [n, 3] && interp.losses.count == n && interp.vocab == dls.vocab)
        #expect(interp.confusionMatrix().joined().reduce(0, +) == n)
        // Each loss is the cross-entropy of its own prediction, so losses and items line up.
        let p = interp.preds.doubles
        for i in 0..<n { #expect(abs(interp.losses[i] + log(p[i * 3 + interp.targets[i]])) < 1e-4) }

        let dir = try makeTemporaryDirectory("interp")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try interp.plotConfusionMatrix(to: dir + "/cm.png", normalize: true)
        let cm = try Image.read(dir + "/cm.png"),
            layout = try MatrixLayout(vocab: dls.vocab, title: "Confusion matrix", widest: "0.00")
        #expect(cm.width == layout.width && cm.height == layout.height && layout.cell == 80)
        try interp.plotTopLosses(4, to: dir + "/top.png", ncols: 2)
        let shown = min(4, n), rows = (shown + 1) / 2, cols = min(2, shown)
        let top = try Image.read(dir + "/top.png")
        // 192-px cells, 8-px gaps, a 30-px header and one 20-px title line (short class names).
        #expect(top.width == cols * 200 + 8 && top.height == 30 + rows * (192 + 20 + 8) + 8)

        let tensors = try ClassificationInterpretation(
            learn, dl: DataLoader(Tensor.zeros([2, 3, 16, 16]), Tensor([Int64(0), 1]), batchSize: 2))
        #expect(throws: InterpretationError.self) { try tensors.plotTopLosses(to: dir + "/none.png") }
    }
}
