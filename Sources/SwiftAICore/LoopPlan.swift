/// Iteration over several strided operands that share one (broadcast) shape.
///
/// Dimensions are ordered by the memory order of a chosen operand (the output for elementwise ops,
/// the input for reductions), size-1 dimensions dropped and neighbours merged where every operand
/// allows it, so a dense channels-last tensor iterates as one flat run just like a contiguous one.
/// `run` calls its body once per innermost run with each operand's storage offset.
struct LoopPlan {
    /// Iteration shape, outermost first.
    private(set) var shape: [Int]
    /// Per operand, per dimension strides in elements (0 where broadcast).
    private(set) var strides: [[Int]]
    /// Per operand storage offset of the first element.
    let bases: [Int]
    /// Total number of positions.
    let count: Int

    /// - Parameters:
    ///   - shape: the iteration shape.
    ///   - operands: each operand's strides (already broadcast to `shape`) and offset.
    ///   - orderBy: the operand whose memory order drives the loop nest.
    init(shape: [Int], operands: [(strides: [Int], offset: Int)], orderBy: Int = 0) {
        bases = operands.map(\.offset)
        count = shape.reduce(1, *)
        let key = operands[orderBy].strides
        // Outer-to-inner by the key operand's strides; ties keep logical order.
        var dims = (0..<shape.count).filter { shape[$0] != 1 }
        dims.sort { key[$0] != key[$1] ? key[$0] > key[$1] : $0 < $1 }
        var sh: [Int] = []
        var st: [[Int]] = Array(repeating: [], count: operands.count)
        for d in dims {
            if let last = sh.last,
                operands.indices.allSatisfy({ st[$0].last! == operands[$0].strides[d] * shape[d] })
            {
                sh[sh.count - 1] = last * shape[d]
                for k in operands.indices { st[k][st[k].count - 1] = operands[k].strides[d] }
            } else {
                sh.append(shape[d])
                for k in operands.indices { st[k].append(operands[k].strides[d]) }
            }
        }
        if sh.isEmpty {
            sh = [1]
            for k in operands.indices { st[k] = [0] }
        }
        self.shape = sh
        self.strides = st
    }

    /// Innermost stride of operand `k`.
    func innerStride(_ k: Int) -> Int { strides[k][shape.count - 1] }

    /// Calls `body(offsets, n)` for every innermost run that intersects `range` (flat positions in loop
    /// order); `offsets[k]` is operand `k`'s storage offset at the run's start and `n` its length.
    func run(_ range: Range<Int>, _ body: (UnsafeMutablePointer<Int>, Int) -> Void) {
        if range.isEmpty { return }
        let nd = shape.count, nops = bases.count
        let inner = shape[nd - 1]
        var index = [Int](repeating: 0, count: nd)
        let offs = UnsafeMutablePointer<Int>.allocate(capacity: nops)
        defer { offs.deallocate() }
        var rem = range.lowerBound
        for d in stride(from: nd - 1, through: 0, by: -1) {
            index[d] = rem % shape[d]
            rem /= shape[d]
        }
        for k in 0..<nops {
            var o = bases[k]
            for d in 0..<nd { o += index[d] * strides[k][d] }
            offs[k] = o
        }
        var pos = range.lowerBound
        while pos < range.upperBound {
            let n = Swift.min(inner - index[nd - 1], range.upperBound - pos)
            body(offs, n)
            pos += n
            // Advance to the start of the next run.
            for k in 0..<nops { offs[k] += n * strides[k][nd - 1] }
            index[nd - 1] += n
            var d = nd - 1
            while d > 0 && index[d] == shape[d] {
                for k in 0..<nops { offs[k] += strides[k][d - 1] - shape[d] * strides[k][d] }
                index[d] = 0
                index[d - 1] += 1
                d -= 1
            }
        }
    }
}

extension Tensor {
    /// Strides of `self` viewed with broadcast shape `target` (0 on broadcast dimensions).
    func broadcastStrides(to target: [Int]) -> [Int] {
        let pad = target.count - rank
        var out = [Int](repeating: 0, count: target.count)
        for i in 0..<rank where shape[i] != 1 {
            out[pad + i] = strides[i]
        }
        return out
    }

    /// NumPy broadcasting of two shapes; `nil` when incompatible.
    public static func broadcastShapes(_ a: [Int], _ b: [Int]) -> [Int]? {
        let n = Swift.max(a.count, b.count)
        var out = [Int](repeating: 1, count: n)
        for i in 0..<n {
            let x = i < n - a.count ? 1 : a[i - (n - a.count)]
            let y = i < n - b.count ? 1 : b[i - (n - b.count)]
            if x != y && x != 1 && y != 1 { return nil }
            out[i] = x == 1 ? y : x
        }
        return out
    }

    /// Strides for a new tensor of `shape` that follow the memory order of `like` when `like` is dense
    /// and has that shape (so channels-last stays channels-last), else row-major.
    static func stridesFollowing(_ like: [Tensor], shape: [Int]) -> [Int] {
        for t in like where t.shape == shape && t.isDense && !t.isContiguous {
            let order = (0..<shape.count).sorted {
                t.strides[$0] != t.strides[$1] ? t.strides[$0] > t.strides[$1] : $0 < $1
            }
            var st = [Int](repeating: 0, count: shape.count)
            var acc = 1
            for d in order.reversed() {
                st[d] = acc
                acc *= Swift.max(shape[d], 1)
            }
            return st
        }
        return contiguousStrides(shape)
    }
}
