// Reductions: sum, mean, max/min with indices, argmax, variance and standard deviation.

extension Tensor {
    /// Normalised, sorted, de-duplicated reduction dimensions (`nil` = all).
    func reductionDims(_ dims: [Int]?, _ op: String) -> [Int] {
        guard let dims else { return Array(0..<rank) }
        return Array(Set(dims.map { dimIndex($0, op) })).sorted()
    }

    /// Shape after reducing `dims` with `keepDim`.
    func reducedShape(_ dims: [Int], keepDim: Bool) -> [Int] {
        var out: [Int] = []
        for i in 0..<rank {
            if dims.contains(i) { if keepDim { out.append(1) } } else { out.append(shape[i]) }
        }
        return out
    }

    /// Sum over `dims` without autograd, accumulated in `Double`.
    func sumKernel(_ dims: [Int], keepDim: Bool) -> Tensor {
        if !dtype.isCompute {
            let s = to(.float64).sumKernel(dims, keepDim: keepDim)
            return dtype.isFloatingPoint ? s.to(dtype) : s.to(.int64)
        }
        let keepShape = reducedShape(dims, keepDim: true)
        var outStrides = Tensor.contiguousStrides(keepShape)
        for d in dims { outStrides[d] = 0 }
        let plan = LoopPlan(shape: shape, operands: [(outStrides, 0), (strides, offset)], orderBy: 1)
        let outCount = keepShape.reduce(1, *)
        var acc = [Double](repeating: 0, count: Swift.max(outCount, 1))
        func go<T: FloatElement>(_: T.Type) {
            let base = storage.data.assumingMemoryBound(to: T.self)
            let so = plan.innerStride(0), si = plan.innerStride(1)
            if outCount == 1 {
                // Full reduction: per-thread partial sums.
                let threads = Swift.max(1, Swift.min(Parallel.threadCount, plan.count / 65_536))
                var partial = [Double](repeating: 0, count: threads)
                partial.withUnsafeMutableBufferPointer { pp in
                    let per = (plan.count + threads - 1) / threads
                    Parallel.forEachChunk(threads, grain: 1) { tr in
                        for t in tr {
                            var s = 0.0
                            plan.run((t * per)..<Swift.min(plan.count, (t + 1) * per)) { offs, len in
                                s += Tensor.accurateSum(base + offs[1], count: len, stride: si)
                            }
                            pp[t] = s
                        }
                    }
                }
                acc[0] = partial.reduce(0, +)
                return
            }
            // Each thread accumulates its share of the input into a private copy of the output.
            let threads = Swift.max(1, Swift.min(Parallel.threadCount, plan.count / 65_536))
            var partial = [Double](repeating: 0, count: threads * outCount)
            partial.withUnsafeMutableBufferPointer { pp in
                let per = (plan.count + threads - 1) / threads
                Parallel.forEachChunk(threads, grain: 1) { tr in
                    for t in tr {
                        let a = pp.baseAddress! + t * outCount
                        plan.run((t * per)..<Swift.min(plan.count, (t + 1) * per)) { offs, len in
                            let p = base + offs[1]
                            if so == 0 {
                                a[offs[0]] += Tensor.accurateSum(p, count: len, stride: si)
                            } else {
                                let q = a + offs[0]
                                for i in 0..<len { q[i * so] += p[i * si].doubleValue }
                            }
                        }
                    }
                }
            }
            for t in 0..<threads { for i in 0..<outCount { acc[i] += partial[t * outCount + i] } }
        }
        if dtype == .float32 { go(Float.self) } else { go(Double.self) }
        let out = Tensor(acc.map { Float($0) }, shape: keepDim ? keepShape : reducedShape(dims, keepDim: false))
        return dtype == .float32 ? out : Tensor(acc, shape: out.shape)
    }

    /// Σ p[i·stride] for i < count: 16 lanes in `T` over blocks of 1024, blocks added in `Double`.
    @inline(__always)
    static func accurateSum<T: FloatElement>(_ p: UnsafeMutablePointer<T>, count: Int, stride: Int) -> Double {
        var total = 0.0, start = 0
        if stride == 1 {
            while start + 16 <= count {
                var acc = SIMD16<T>(repeating: 0)
                let end = start + Swift.min(1024, (count - start) / 16 * 16)
                var i = start
                while i < end {
                    acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<T>.self)
                    i += 16
                }
                total += acc.sum().doubleValue
                start = end
            }
        }
        var tail: T = 0
        for i in start..<count { tail += p[i * stride] }
        return total + tail.doubleValue
    }

    /// Sum over `dims` (all when `nil`). Integer and bool inputs sum to `int64`.
    public func sum(dims: [Int]? = nil, keepDim: Bool = false) -> Tensor {
        let d = reductionDims(dims, "sum")
        var y = sumKernel(d, keepDim: keepDim)
        if Tensor.needsGrad(self) {
            let x = self.detached(), keepShape = reducedShape(d, keepDim: true)
            y.recordGrad("sum", [self]) { g in [g.reshape(keepShape).expandedCopy(like: x)] }
        }
        return y
    }

    /// Sum over one dimension.
    public func sum(dim: Int, keepDim: Bool = false) -> Tensor { sum(dims: [dim], keepDim: keepDim) }

    /// Mean over `dims` (all when `nil`).
    public func mean(dims: [Int]? = nil, keepDim: Bool = false) -> Tensor {
        requireCompute("mean")
        let d = reductionDims(dims, "mean")
        let n = d.reduce(1) { $0 * shape[$1] }
        return sum(dims: d, keepDim: keepDim) / Double(Swift.max(n, 1))
    }

    /// Mean over one dimension.
    public func mean(dim: Int, keepDim: Bool = false) -> Tensor { mean(dims: [dim], keepDim: keepDim) }

    /// Variance with Bessel-style `correction` (1 = unbiased, PyTorch's default).
    public func variance(dims: [Int]? = nil, correction: Int = 1, keepDim: Bool = false) -> Tensor {
        let d = reductionDims(dims, "var")
        let n = d.reduce(1) { $0 * shape[$1] }
        let centred = self - mean(dims: d, keepDim: true)
        return (centred * centred).sum(dims: d, keepDim: keepDim) / Double(Swift.max(n - correction, 0))
    }

    /// Standard deviation with `correction` (see ``variance(dims:correction:keepDim:)``).
    public func std(dims: [Int]? = nil, correction: Int = 1, keepDim: Bool = false) -> Tensor {
        variance(dims: dims, correction: correction, keepDim: keepDim).sqrt()
    }

    /// Sums broadcast dimensions away so the result has `target` shape (gradients of broadcast ops).
    public func sumToShape(_ target: [Int]) -> Tensor {
        if shape == target { return self }
        let lead = rank - target.count
        var dims = Array(0..<lead)
        for i in 0..<target.count where target[i] == 1 && shape[lead + i] != 1 { dims.append(lead + i) }
        return sum(dims: dims, keepDim: true).reshape(target)
    }

    /// `self` broadcast to `like`'s shape and materialised in `like`'s memory order.
    func expandedCopy(like: Tensor) -> Tensor {
        var out = Tensor(empty: like.shape, dtype: dtype, strides: Tensor.stridesFollowing([like], shape: like.shape))
        out.copyElements(from: self)
        return out
    }

    /// Counts of elements in `bins` equal-width bins over [min, max] (PyTorch's `histc`; values outside are
    /// ignored, `max` falls in the last bin). Returns `float64` counts.
    public func histogram(bins: Int, min lo: Double, max hi: Double) -> Tensor {
        require(bins > 0 && hi > lo, "histc: need bins > 0 and max > min, got \(bins), [\(lo), \(hi)]")
        var counts = [Double](repeating: 0, count: bins)
        let scale = Double(bins) / (hi - lo)
        func go<T: FloatElement>(_: T.Type) {
            let c = isDense ? self : contiguous()
            let p = c.pointer(T.self)
            for i in 0..<c.count {
                let v = p[i].doubleValue
                guard v >= lo && v <= hi else { continue }
                counts[Swift.min(bins - 1, Int((v - lo) * scale))] += 1
            }
        }
        switch dtype {
        case .float32: go(Float.self)
        case .float64: go(Double.self)
        default: return to(.float64).histogram(bins: bins, min: lo, max: hi)
        }
        return Tensor(counts)
    }

    // MARK: Max / min

    /// Largest values along `dim` and their positions (first on ties). Gradient flows to those positions.
    public func max(dim: Int, keepDim: Bool = false) -> (values: Tensor, indices: Tensor) {
        extremum(dim: dim, keepDim: keepDim, largest: true, "max")
    }

    /// Smallest values along `dim` and their positions.
    public func min(dim: Int, keepDim: Bool = false) -> (values: Tensor, indices: Tensor) {
        extremum(dim: dim, keepDim: keepDim, largest: false, "min")
    }

    /// The largest element (0-D). Gradient is shared among all maximal elements, as PyTorch's `max()`.
    public func max() -> Tensor { globalExtremum(largest: true) }
    /// The smallest element (0-D).
    public func min() -> Tensor { globalExtremum(largest: false) }

    /// Positions of the largest values along `dim` (`int64`).
    public func argmax(dim: Int, keepDim: Bool = false) -> Tensor { max(dim: dim, keepDim: keepDim).indices.detached() }
    /// Positions of the smallest values along `dim` (`int64`).
    public func argmin(dim: Int, keepDim: Bool = false) -> Tensor { min(dim: dim, keepDim: keepDim).indices.detached() }

    private func globalExtremum(largest: Bool) -> Tensor {
        require(count > 0, "\(largest ? "max" : "min")(): expected a non-empty tensor")
        let v = noGrad { reshape([-1]).extremum(dim: 0, keepDim: false, largest: largest, "max").values }
        var y = v
        if Tensor.needsGrad(self) {
            let x = detached()
            y.recordGrad(largest ? "max" : "min", [self]) { g in
                let mask = (x .== v).to(x.dtype)
                return [mask * (g / mask.sum())]
            }
        }
        return y
    }

    private func extremum(dim: Int, keepDim: Bool, largest: Bool, _ op: String) -> (values: Tensor, indices: Tensor) {
        let d = dimIndex(dim, op)
        require(shape[d] > 0, "\(op): cannot reduce an empty dimension")
        let src = to(dtype.isCompute ? dtype : .float64).movedim(d, -1).contiguous().detached()
        let k = shape[d], rows = count / k
        var vals = [Double](repeating: 0, count: rows)
        var idx = [Int64](repeating: 0, count: rows)
        func go<T: FloatElement>(_: T.Type) {
            let p = src.pointer(T.self)
            for r in 0..<rows {
                let row = p + r * k
                var best = row[0], bi = 0
                if !best.isNaN {
                    for j in 1..<k {
                        let v = row[j]
                        if v.isNaN { best = v; bi = j; break }
                        if largest ? v > best : v < best { best = v; bi = j }
                    }
                }
                vals[r] = best.doubleValue
                idx[r] = Int64(bi)
            }
        }
        if src.dtype == .float32 { go(Float.self) } else { go(Double.self) }
        let outShape = reducedShape([d], keepDim: keepDim)
        var values = Tensor(vals, shape: outShape).to(dtype)
        let indices = Tensor(idx, shape: outShape)
        if Tensor.needsGrad(self) {
            let inShape = shape, dt = dtype
            values.recordGrad(op, [self]) { g in
                let gk = keepDim ? g : g.unsqueeze(d)
                let ik = keepDim ? indices : indices.unsqueeze(d)
                return [Tensor.zeros(inShape, dtype: dt).scatterAdd(dim: d, index: ik, source: gk)]
            }
        }
        return (values, indices)
    }
}
