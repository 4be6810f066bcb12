// Shape and stride views: reshape, permute, expand, squeeze, slicing, contiguous copies.

/// One entry of a tensor subscript: `x[0, 1..<3, .all, .newAxis]`.
public struct TensorIndex: TensorIndexConvertible {
    enum Kind {
        case index(Int)
        case slice(start: Int?, end: Int?, step: Int)
        case all, newAxis, ellipsis
    }
    let kind: Kind
    public var tensorIndex: TensorIndex { self }
}

/// Values usable inside a tensor subscript.
public protocol TensorIndexConvertible {
    var tensorIndex: TensorIndex { get }
}

extension TensorIndexConvertible where Self == TensorIndex {
    /// A single position (negative counts from the end); removes the dimension.
    public static func index(_ i: Int) -> TensorIndex { TensorIndex(kind: .index(i)) }
    /// Python-style `start:end:step`; `nil` bounds mean the ends. Out-of-range bounds are clipped.
    public static func slice(start: Int?, end: Int?, step: Int = 1) -> TensorIndex {
        TensorIndex(kind: .slice(start: start, end: end, step: step))
    }
    /// `range` taken every `step` elements.
    public static func range(_ range: Range<Int>, step: Int) -> TensorIndex {
        .slice(start: range.lowerBound, end: range.upperBound, step: step)
    }
    /// The whole dimension (`:`).
    public static var all: TensorIndex { TensorIndex(kind: .all) }
    /// Inserts a dimension of size 1 (`None`).
    public static var newAxis: TensorIndex { TensorIndex(kind: .newAxis) }
    /// As many `.all` as needed to index every dimension (`...`).
    public static var ellipsis: TensorIndex { TensorIndex(kind: .ellipsis) }
}

extension Int: TensorIndexConvertible {
    public var tensorIndex: TensorIndex { .index(self) }
}
extension Range: TensorIndexConvertible where Bound == Int {
    public var tensorIndex: TensorIndex { .slice(start: lowerBound, end: upperBound, step: 1) }
}
extension ClosedRange: TensorIndexConvertible where Bound == Int {
    public var tensorIndex: TensorIndex {
        .slice(start: lowerBound, end: upperBound == -1 ? nil : upperBound + 1, step: 1)
    }
}
extension PartialRangeFrom: TensorIndexConvertible where Bound == Int {
    public var tensorIndex: TensorIndex { .slice(start: lowerBound, end: nil, step: 1) }
}
extension PartialRangeUpTo: TensorIndexConvertible where Bound == Int {
    public var tensorIndex: TensorIndex { .slice(start: nil, end: upperBound, step: 1) }
}
extension PartialRangeThrough: TensorIndexConvertible where Bound == Int {
    public var tensorIndex: TensorIndex { .slice(start: nil, end: upperBound == -1 ? nil : upperBound + 1, step: 1) }
}

extension Tensor {
    /// A view with new geometry over the same storage (no autograd).
    func viewing(shape: [Int], strides: [Int], offset: Int) -> Tensor {
        Tensor(storage: storage, shape: shape, strides: strides, offset: offset, dtype: dtype)
    }

    /// Normalises a possibly negative dimension index against `rank` (or `rank + extra`).
    func dimIndex(_ d: Int, _ op: String, extra: Int = 0) -> Int {
        let n = rank + extra
        let r = d < 0 ? d + n : d
        require(
            r >= 0 && r < Swift.max(n, 1),
            """
            \(op): dimension out of range (expected to be in range of [\(-Swift.max(n, 1)), \(Swift.max(n, 1) - 1)], \
            but got \(d))
            """
        )
        return r
    }

    // MARK: Reshape

    /// Same elements with a new shape; one entry may be -1. Shares storage when the strides allow,
    /// copies otherwise.
    public func reshape(_ newShape: [Int]) -> Tensor {
        let target = inferShape(newShape, "reshape")
        if let st = Tensor.viewStrides(shape, strides, target) {
            return view(target, strides: st, "reshape")
        }
        return contiguous().reshape(target)
    }

    /// Same elements with a new shape, always sharing storage; stops if the strides cannot express it.
    public func view(_ newShape: [Int]) -> Tensor {
        let target = inferShape(newShape, "view")
        guard let st = Tensor.viewStrides(shape, strides, target) else {
            fatalError(
                """
                view: size \(target) is not compatible with input tensor's size \(shape) and strides \(strides) (at \
                least one dimension spans across two contiguous subspaces). Use .reshape(...) instead.
                """
            )
        }
        return view(target, strides: st, "view")
    }

    private func view(_ target: [Int], strides st: [Int], _ op: String) -> Tensor {
        var y = viewing(shape: target, strides: st, offset: offset)
        if Tensor.needsGrad(self) {
            let inShape = shape
            y.recordGrad(op, [self]) { g in [g.reshape(inShape)] }
        }
        return y
    }

    private func inferShape(_ newShape: [Int], _ op: String) -> [Int] {
        var s = newShape
        let known = s.filter { $0 != -1 }.reduce(1, *)
        let unknown = s.indices.filter { s[$0] == -1 }
        require(unknown.count <= 1, "\(op): only one dimension can be inferred, got \(newShape)")
        if let u = unknown.first {
            require(known > 0 && count % known == 0, "\(op): shape \(newShape) is invalid for input of size \(count)")
            s[u] = count / known
        }
        require(
            s.reduce(1, *) == count && s.allSatisfy { $0 >= 0 },
            "\(op): shape \(newShape) is invalid for input of size \(count)")
        return s
    }

    /// Strides that express `newShape` over the same memory, or `nil` (PyTorch's `computeStride`).
    static func viewStrides(_ oldShape: [Int], _ oldStrides: [Int], _ newShape: [Int]) -> [Int]? {
        let numel = oldShape.reduce(1, *)
        if numel == 0 || oldShape.isEmpty { return contiguousStrides(newShape) }
        var newStrides = [Int](repeating: 0, count: newShape.count)
        var viewD = newShape.count - 1
        var chunkBase = oldStrides[oldStrides.count - 1]
        var tensorNumel = 1, viewNumel = 1
        for td in stride(from: oldShape.count - 1, through: 0, by: -1) {
            tensorNumel *= oldShape[td]
            if td == 0 || (oldShape[td - 1] != 1 && oldStrides[td - 1] != tensorNumel * chunkBase) {
                while viewD >= 0 && (viewNumel < tensorNumel || newShape[viewD] == 1) {
                    newStrides[viewD] = viewNumel * chunkBase
                    viewNumel *= newShape[viewD]
                    viewD -= 1
                }
                if viewNumel != tensorNumel { return nil }
                if td > 0 {
                    chunkBase = oldStrides[td - 1]
                    tensorNumel = 1
                    viewNumel = 1
                }
            }
        }
        return viewD == -1 ? newStrides : nil
    }

    /// Merges dimensions `startDim...endDim` into one.
    public func flatten(startDim: Int = 0, endDim: Int = -1) -> Tensor {
        if rank == 0 { return reshape([1]) }
        let s = dimIndex(startDim, "flatten"), e = dimIndex(endDim, "flatten")
        require(s <= e, "flatten: start_dim \(startDim) cannot come after end_dim \(endDim)")
        let merged = shape[s...e].reduce(1, *)
        return reshape(Array(shape[..<s]) + [merged] + Array(shape[(e + 1)...]))
    }

    // MARK: Permutations

    /// Reorders dimensions: result dimension `i` is input dimension `dims[i]`.
    public func permute(_ dims: [Int]) -> Tensor {
        let d = dims.map { dimIndex($0, "permute") }
        require(
            d.count == rank && Set(d).count == rank,
            "permute: number of dims don't match in permute (input shape \(shape), dims \(dims))")
        var y = viewing(shape: d.map { shape[$0] }, strides: d.map { strides[$0] }, offset: offset)
        if Tensor.needsGrad(self) {
            var inverse = [Int](repeating: 0, count: rank)
            for (i, v) in d.enumerated() { inverse[v] = i }
            y.recordGrad("permute", [self]) { g in [g.permute(inverse)] }
        }
        return y
    }

    /// Swaps two dimensions.
    public func transpose(_ d0: Int, _ d1: Int) -> Tensor {
        var p = Array(0..<rank)
        p.swapAt(dimIndex(d0, "transpose"), dimIndex(d1, "transpose"))
        return permute(p)
    }

    /// Moves dimension `source` to position `destination`.
    public func movedim(_ source: Int, _ destination: Int) -> Tensor {
        let s = dimIndex(source, "movedim"), dd = dimIndex(destination, "movedim")
        var p = Array(0..<rank)
        p.remove(at: s)
        p.insert(s, at: dd)
        return permute(p)
    }

    // MARK: Size-1 dimensions and broadcasting

    /// Inserts a dimension of size 1 at `dim`.
    public func unsqueeze(_ dim: Int) -> Tensor {
        let d = dimIndex(dim, "unsqueeze", extra: 1)
        var sh = shape, st = strides
        sh.insert(1, at: d)
        st.insert(d < rank ? strides[d] * shape[d] : 1, at: d)
        return view(sh, strides: st, "unsqueeze")
    }

    /// Removes dimension `dim` if it has size 1 (else returns `self`), or every size-1 dimension.
    public func squeeze(_ dim: Int? = nil) -> Tensor {
        var keep = Array(0..<rank)
        if let dim {
            let d = dimIndex(dim, "squeeze")
            if shape[d] != 1 { return self }
            keep.remove(at: d)
        } else {
            keep = keep.filter { shape[$0] != 1 }
        }
        return view(keep.map { shape[$0] }, strides: keep.map { strides[$0] }, "squeeze")
    }

    /// A broadcast view with `newShape` (stride 0 on expanded dimensions; -1 keeps a size).
    public func expand(_ newShape: [Int]) -> Tensor {
        require(
            newShape.count >= rank,
            """
            expand: the number of sizes provided (\(newShape.count)) must be greater or equal to the number of \
            dimensions in the tensor (\(rank))
            """
        )
        let pad = newShape.count - rank
        var sh = newShape, st = [Int](repeating: 0, count: newShape.count)
        for i in 0..<newShape.count where i >= pad {
            let own = shape[i - pad]
            if sh[i] == -1 { sh[i] = own }
            require(
                own == sh[i] || own == 1,
                """
                expand: the expanded size of the tensor (\(sh[i])) must match the existing size (\(own)) at \
                non-singleton dimension \(i). Target sizes: \(newShape). Tensor sizes: \(shape)
                """
            )
            st[i] = own == 1 ? 0 : strides[i - pad]
        }
        var y = viewing(shape: sh, strides: st, offset: offset)
        if Tensor.needsGrad(self) {
            let inShape = shape
            y.recordGrad("expand", [self]) { g in [g.sumToShape(inShape)] }
        }
        return y
    }

    // MARK: Slicing

    /// A view selected by integers, ranges, `.all`, `.newAxis` and `.ellipsis` (PyTorch basic indexing).
    public subscript(_ indices: TensorIndexConvertible...) -> Tensor {
        get { slice(indices.map(\.tensorIndex)) }
        set { assign(newValue, at: indices.map(\.tensorIndex)) }
    }

    /// Geometry of a basic-indexing view.
    func sliceGeometry(_ indices: [TensorIndex]) -> (shape: [Int], strides: [Int], offset: Int) {
        let consumed = indices.filter {
            if case .newAxis = $0.kind { return false }
            if case .ellipsis = $0.kind { return false }
            return true
        }.count
        require(consumed <= rank, "index: too many indices for tensor of dimension \(rank)")
        require(
            indices.filter { if case .ellipsis = $0.kind { return true } else { return false } }.count <= 1,
            "index: an index can only have a single ellipsis")
        var sh: [Int] = [], st: [Int] = [], off = offset, d = 0
        for idx in indices {
            switch idx.kind {
            case .index(let i):
                let j = i < 0 ? i + shape[d] : i
                require(
                    j >= 0 && j < shape[d],
                    "index: index \(i) is out of bounds for dimension \(d) with size \(shape[d])")
                off += j * strides[d]
                d += 1
            case .slice(let start, let end, let step):
                require(step > 0, "index: slice step must be positive, got \(step)")
                let n = shape[d]
                func clip(_ v: Int?, _ dflt: Int) -> Int {
                    guard let v else { return dflt }
                    return Swift.min(Swift.max(v < 0 ? v + n : v, 0), n)
                }
                let s = clip(start, 0), e = Swift.max(clip(end, n), s)
                sh.append((e - s + step - 1) / step)
                st.append(strides[d] * step)
                off += s * strides[d]
                d += 1
            case .all:
                sh.append(shape[d]); st.append(strides[d]); d += 1
            case .newAxis:
                sh.append(1); st.append(0)
            case .ellipsis:
                for _ in 0..<(rank - consumed) { sh.append(shape[d]); st.append(strides[d]); d += 1 }
            }
        }
        while d < rank { sh.append(shape[d]); st.append(strides[d]); d += 1 }
        return (sh, st, off)
    }

    func slice(_ indices: [TensorIndex]) -> Tensor {
        let g = sliceGeometry(indices)
        var y = viewing(shape: g.shape, strides: g.strides, offset: g.offset)
        if Tensor.needsGrad(self) {
            let inShape = shape, inDtype = dtype
            y.recordGrad("slice", [self]) { grad in
                var z = Tensor.zeros(inShape, dtype: inDtype)
                z.assign(grad, at: indices)
                return [z]
            }
        }
        return y
    }

    /// Writes `value` (broadcast) into the region selected by `indices`. Not recorded by autograd.
    mutating func assign(_ value: Tensor, at indices: [TensorIndex]) {
        require(
            !(GradMode.isEnabled && (requiresGrad || value.requiresGrad)),
            """
            index assignment: in-place writes are not differentiable; use noGrad { } or build a new tensor with \
            cat/where
            """
        )
        makeUnique()
        let g = sliceGeometry(indices)
        var region = viewing(shape: g.shape, strides: g.strides, offset: g.offset)
        region.copyElements(from: value.to(dtype))
    }

    // MARK: Copies

    /// Row-major copy, or `self` if already contiguous. Gradient passes through.
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        return copied(strides: Tensor.contiguousStrides(shape), "contiguous")
    }

    /// Memory layouts for 4-D tensors.
    public enum MemoryFormat: Sendable { case contiguous, channelsLast }

    /// A copy in the requested memory format, or `self` if already in it. Gradient passes through.
    public func contiguous(_ format: MemoryFormat) -> Tensor {
        switch format {
        case .contiguous: return contiguous()
        case .channelsLast:
            if isChannelsLast { return self }
            return copied(strides: Tensor.channelsLastStrides(shape), "channels_last")
        }
    }

    /// A fresh copy of the data (same values, own storage), laid out row-major.
    public func clone() -> Tensor { copied(strides: Tensor.contiguousStrides(shape), "clone") }

    private func copied(strides st: [Int], _ op: String) -> Tensor {
        var y = Tensor(empty: shape, dtype: dtype, strides: st)
        y.copyElements(from: self)
        if Tensor.needsGrad(self) { y.recordGrad(op, [self]) { g in [g] } }
        return y
    }

    /// Copies `src` (same dtype, broadcast to this shape) into this view's elements, in place.
    /// The caller guarantees the storage is not shared with live values.
    mutating func copyElements(from src: Tensor) {
        require(src.dtype == dtype, "copy: dtype \(src.dtype) into \(dtype)")
        require(
            Tensor.broadcastShapes(src.shape, shape) == shape,
            "copy: source shape \(src.shape) cannot be broadcast to \(shape)")
        if src.shape == shape && src.strides == strides && count < 131_072 && isDense {  // one block, one thread
            rawPointer.copyMemory(from: src.rawPointer, byteCount: count * dtype.byteSize)
            return
        }
        let plan = LoopPlan(shape: shape, operands: [(strides, offset), (src.broadcastStrides(to: shape), src.offset)])
        let n = plan.count
        let d0 = storage.data, s0 = src.storage.data
        func go<E>(_: E.Type) {
            let dp = d0.assumingMemoryBound(to: E.self), sp = s0.assumingMemoryBound(to: E.self)
            let sd = plan.innerStride(0), ss = plan.innerStride(1)
            Parallel.forEachChunk(n, grain: 65_536) { r in
                plan.run(r) { offs, len in
                    let d = dp + offs[0], s = sp + offs[1]
                    if sd == 1 && ss == 1 {
                        d.update(from: s, count: len)
                    } else {
                        for i in 0..<len { d[i * sd] = s[i * ss] }
                    }
                }
            }
        }
        switch dtype.byteSize {
        case 8: go(UInt64.self)
        case 4: go(UInt32.self)
        case 2: go(UInt16.self)
        default: go(UInt8.self)
        }
    }
}
