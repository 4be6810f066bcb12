// Gather/scatter, index selection, one-hot, concatenation, splitting and padding.

extension Tensor {
    /// Index values as `Int`, checked against `0..<bound` (negative values count from the end).
    func indexValues(bound: Int, _ op: String) -> [Int] {
        require(dtype == .int64 || dtype == .int32, "\(op): expected an int64 or int32 index tensor, got \(dtype)")
        return scalars(as: Int64.self).map { v in
            let i = v < 0 ? Int(v) + bound : Int(v)
            require(i >= 0 && i < bound, "\(op): index \(v) is out of bounds for dimension with size \(bound)")
            return i
        }
    }

    /// Storage offsets of `self` for every position of `index` (same rank), with dimension `d` replaced by
    /// the index value.
    private func gatherOffsets(_ d: Int, _ index: Tensor, _ op: String) -> [Int] {
        require(
            index.rank == rank,
            "\(op): index tensor must have the same number of dimensions as input tensor (\(index.rank) vs \(rank))")
        for i in 0..<rank where i != d {
            require(
                index.shape[i] <= shape[i],
                "\(op): size does not match at dimension \(i): index \(index.shape) vs input \(shape)")
        }
        let vals = index.indexValues(bound: shape[d], op)
        var out = [Int](repeating: 0, count: vals.count)
        var pos = [Int](repeating: 0, count: rank)
        for (n, v) in vals.enumerated() {
            var o = offset
            for i in 0..<rank { o += (i == d ? v : pos[i]) * strides[i] }
            out[n] = o
            var k = rank - 1
            while k >= 0 {
                pos[k] += 1
                if pos[k] < index.shape[k] { break }
                pos[k] = 0
                k -= 1
            }
        }
        return out
    }

    /// `out[..., j, ...] = self[..., index[..., j, ...], ...]` along `dim` (PyTorch's `gather`).
    public func gather(dim: Int, index: Tensor) -> Tensor {
        let d = dimIndex(dim, "gather")
        let offs = gatherOffsets(d, index, "gather")
        let src = self.to(dtype.isCompute ? dtype : .float64)
        let vals = offs.map { src.readDouble(at: $0 - offset + src.offset) }
        var y = Tensor(vals, shape: index.shape).to(dtype)
        if Tensor.needsGrad(self) {
            let inShape = shape, dt = dtype, idx = index
            y.recordGrad("gather", [self]) { g in
                [Tensor.zeros(inShape, dtype: dt).scatterAdd(dim: d, index: idx, source: g)]
            }
        }
        return y
    }

    /// A copy with `source` added at the positions `index` selects along `dim` (not recorded by autograd).
    public func scatterAdd(dim: Int, index: Tensor, source: Tensor) -> Tensor {
        let d = dimIndex(dim, "scatter_add")
        require(
            source.shape == index.shape,
            "scatter_add: source shape \(source.shape) must match index shape \(index.shape)")
        var out = self.detached().contiguous().to(.float64)
        out = out.clone()
        let offs = out.gatherOffsets(d, index, "scatter_add")
        let p = out.pointer(Double.self)
        for (o, v) in zip(offs, source.to(.float64).doubles) { p[o] += v }
        return out.to(dtype)
    }

    /// Entries of dimension `dim` picked by a 1-D `index` (PyTorch's `index_select`).
    public func indexSelect(dim: Int, index: Tensor) -> Tensor {
        let d = dimIndex(dim, "index_select")
        require(index.rank <= 1, "index_select: index must be 1-D, got shape \(index.shape)")
        let idx = index.indexValues(bound: shape[d], "index_select")
        var outShape = shape
        outShape[d] = idx.count
        var y = Tensor(empty: outShape, dtype: dtype)
        let prefix = [TensorIndex](repeating: .all, count: d)
        noGrad {
            if d == 0 && isContiguous {
                // Rows are contiguous blocks: plain copies.
                let row = count / Swift.max(shape[0], 1) * dtype.byteSize
                let src = storage.data + offset * dtype.byteSize, dst = y.storage.data
                for (i, j) in idx.enumerated() { (dst + i * row).copyMemory(from: src + j * row, byteCount: row) }
            } else {
                for (i, j) in idx.enumerated() {
                    var region = y.slice(prefix + [.index(i)])
                    region.copyElements(from: slice(prefix + [.index(j)]))
                }
            }
        }
        if Tensor.needsGrad(self) {
            let inShape = shape, dt = dtype
            y.recordGrad("index_select", [self]) { g in
                var idxShape = [Int](repeating: 1, count: g.rank)
                idxShape[d] = idx.count
                let full = Tensor(idx.map(Int64.init), shape: idxShape).expand(g.shape).contiguous()
                return [Tensor.zeros(inShape, dtype: dt).scatterAdd(dim: d, index: full, source: g)]
            }
        }
        return y
    }

    /// The tensor reversed along `dim` (a copy; differentiable).
    public func flip(dim: Int) -> Tensor {
        let d = dimIndex(dim, "flip")
        return indexSelect(dim: d, index: Tensor((0..<shape[d]).reversed().map(Int64.init)))
    }

    /// One-hot encoding of integer labels: shape `shape + [numClasses]`.
    public func oneHot(numClasses: Int, dtype outType: DType = .int64) -> Tensor {
        let vals = indexValues(bound: numClasses, "one_hot")
        var out = [Double](repeating: 0, count: vals.count * numClasses)
        for (i, v) in vals.enumerated() { out[i * numClasses + v] = 1 }
        return Tensor(out, shape: shape + [numClasses]).to(outType)
    }

    // MARK: Joining and splitting

    /// Concatenates along `dim`; all other sizes must agree.
    public static func cat(_ tensors: [Tensor], dim: Int = 0) -> Tensor {
        require(!tensors.isEmpty, "cat: expected a non-empty list of tensors")
        let first = tensors[0]
        let d = first.dimIndex(dim, "cat")
        for t in tensors {
            require(t.dtype == first.dtype, "cat: expected all tensors to have dtype \(first.dtype), got \(t.dtype)")
            require(
                t.rank == first.rank && (0..<t.rank).allSatisfy { $0 == d || t.shape[$0] == first.shape[$0] },
                "cat: sizes of tensors must match except in dimension \(d); got \(first.shape) and \(t.shape)")
        }
        var outShape = first.shape
        outShape[d] = tensors.reduce(0) { $0 + $1.shape[d] }
        var y = Tensor(empty: outShape, dtype: first.dtype)
        let prefix = [TensorIndex](repeating: .all, count: d)
        var start = 0
        var ranges: [Range<Int>] = []
        noGrad {
            for t in tensors {
                let r = start..<(start + t.shape[d])
                var region = y.slice(prefix + [r.tensorIndex])
                region.copyElements(from: t)
                ranges.append(r)
                start = r.upperBound
            }
        }
        if needsGradArray(tensors) {
            y.node = GradNode(op: "cat", inputs: tensors.map(\.node)) { g in
                ranges.map { g.slice(prefix + [$0.tensorIndex]).contiguous() }
            }
        }
        return y
    }

    private static func needsGradArray(_ ts: [Tensor]) -> Bool {
        ts.contains { $0.node != nil } && GradMode.isEnabled
    }

    /// Stacks equal-shaped tensors along a new dimension `dim`.
    public static func stack(_ tensors: [Tensor], dim: Int = 0) -> Tensor {
        require(!tensors.isEmpty, "stack: expected a non-empty list of tensors")
        for t in tensors {
            require(
                t.shape == tensors[0].shape,
                "stack: expects each tensor to be equal size, but got \(tensors[0].shape) and \(t.shape)")
        }
        return cat(tensors.map { $0.unsqueeze(dim) }, dim: dim)
    }

    /// Views of consecutive pieces of `sizes` along `dim`.
    public func split(_ sizes: [Int], dim: Int = 0) -> [Tensor] {
        let d = dimIndex(dim, "split")
        require(
            sizes.reduce(0, +) == shape[d], "split: sizes \(sizes) must sum to the size \(shape[d]) of dimension \(d)")
        var start = 0
        return sizes.map { s in
            defer { start += s }
            return slice([TensorIndex](repeating: .all, count: d) + [.slice(start: start, end: start + s, step: 1)])
        }
    }

    /// Views of pieces of `size` along `dim` (the last may be smaller).
    public func split(size: Int, dim: Int = 0) -> [Tensor] {
        require(size > 0, "split: split_size must be positive, got \(size)")
        let n = shape[dimIndex(dim, "split")]
        return split(stride(from: 0, to: n, by: size).map { Swift.min(size, n - $0) }, dim: dim)
    }

    /// `chunks` nearly equal views along `dim`.
    public func chunk(_ chunks: Int, dim: Int = 0) -> [Tensor] {
        let n = shape[dimIndex(dim, "chunk")]
        return split(size: Swift.max(1, (n + chunks - 1) / chunks), dim: dim)
    }

    /// Constant padding, PyTorch `F.pad` order: `[left, right]` for the last dimension, then
    /// `[top, bottom]` for the one before, and so on. Negative amounts crop.
    public func pad(_ amounts: [Int], value: Double = 0) -> Tensor {
        require(
            amounts.count % 2 == 0 && amounts.count / 2 <= rank,
            "pad: padding length must be divisible by 2 and at most 2×rank, got \(amounts.count) for rank \(rank)")
        var outShape = shape
        var inner = [TensorIndex](repeating: .all, count: rank)
        var crop = [TensorIndex](repeating: .all, count: rank)
        for k in 0..<(amounts.count / 2) {
            let d = rank - 1 - k, lo = amounts[2 * k], hi = amounts[2 * k + 1]
            outShape[d] = shape[d] + lo + hi
            require(outShape[d] >= 0, "pad: resulting size of dimension \(d) is negative")
            inner[d] = .slice(
                start: Swift.max(lo, 0), end: Swift.max(lo, 0) + shape[d] + Swift.min(lo, 0) + Swift.min(hi, 0), step: 1
            )
            crop[d] = .slice(start: Swift.max(-lo, 0), end: shape[d] - Swift.max(-hi, 0), step: 1)
        }
        var y = Tensor.full(outShape, value, dtype: dtype)
        noGrad {
            var region = y.slice(inner)
            region.copyElements(from: slice(crop))
        }
        if Tensor.needsGrad(self) {
            let inShape = shape, dt = dtype
            y.recordGrad("pad", [self]) { g in
                var z = Tensor.zeros(inShape, dtype: dt)
                z.assign(g.slice(inner), at: crop)
                return [z]
            }
        }
        return y
    }
}
