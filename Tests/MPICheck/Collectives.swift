import Foundation
import SwiftAICore

/// Every collective of ``ProcessGroup`` against values computed by hand from each rank's known input.
func collectives(_ args: [String]) throws {
    let g = try ProcessGroup.mpi()
    let n = g.size, r = g.rank
    var t = Tensor((0..<5).map { Float($0 + 10 * r) })
    g.allReduce(&t, .sum)
    let sumExpected = (0..<5).map { i in Float((0..<n).map { i + 10 * $0 }.reduce(0, +)) }
    try check(t.scalars(as: Float.self) == sumExpected, "allReduce sum: \(t.scalars(as: Float.self))")
    var d = Tensor([Double(r), -Double(r)])
    g.allReduce(&d, .max)
    try check(d.scalars(as: Double.self) == [Double(n - 1), 0], "allReduce max: \(d.scalars(as: Double.self))")
    var i = Tensor([Int64(r + 3)])
    g.allReduce(&i, .min)
    try check(i.scalars(as: Int64.self) == [3], "allReduce min int64: \(i.scalars(as: Int64.self))")
    var ints = [r, 1]
    g.allReduce(&ints)
    try check(ints == [n * (n - 1) / 2, n], "allReduce [Int]: \(ints)")
    var b = r == 0 ? Tensor([Float(7), 8, 9]) : Tensor.zeros([3])
    g.broadcast(&b)
    try check(b.scalars(as: Float.self) == [7, 8, 9], "broadcast: \(b.scalars(as: Float.self))")
    let bytes = g.broadcast(Data(r == 0 ? "from rank 0".utf8 : "other".utf8))
    try check(String(decoding: bytes, as: UTF8.self) == "from rank 0", "broadcast bytes")
    let gathered = g.allGather(Tensor([Float(r), Float(r * r)]))
    try check(gathered.shape == [n, 2], "allGather shape \(gathered.shape)")
    try check(
        gathered.scalars(as: Float.self) == (0..<n).flatMap { [Float($0), Float($0 * $0)] }, "allGather values")
    let texts = g.allGather(Data(String(repeating: "x", count: r + 1).utf8))
    try check(texts.map(\.count) == (0..<n).map { $0 + 1 }, "allGather bytes lengths \(texts.map(\.count))")
    let big = Tensor.full([1 << 20], Double(r + 1))
    let work = g.startAllReduce(big)
    var polls = 0
    while !work.isComplete { polls += 1 }
    work.wait()
    try check(
        big.scalars(as: Float.self).allSatisfy { $0 == Float(n * (n + 1) / 2) }, "startAllReduce: \(big[0].item())")
    try check(g.any(r == n - 1) && !g.any(false), "any")
    g.barrier()
    report(g, ["size": n, "localSize": g.localSize, "threads": Parallel.threadCount, "polls": polls])
}
