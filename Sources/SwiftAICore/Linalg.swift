import CDNNL

// Matrix products on oneDNN's SGEMM (Float) or a reference loop (Double, for gradient checks).

/// A matrix operand as GEMM sees it: base pointer, whether it is stored transposed, leading dimension.
struct GemmOperand {
    let base: UnsafeMutableRawPointer
    let transposed: Bool
    let ld: Int
}

extension Tensor {
    /// The 2-D view at `offset` with `strides` as a GEMM operand, if its strides allow one.
    static func gemmOperand(_ t: Tensor, rows: Int, cols: Int, rowStride: Int, colStride: Int, offset: Int)
        -> GemmOperand?
    {
        let base = t.storage.data + offset * t.dtype.byteSize
        if colStride == 1 && (rowStride >= cols || rows == 1) {
            return GemmOperand(base: base, transposed: false, ld: Swift.max(rowStride, cols, 1))
        }
        if rowStride == 1 && (colStride >= rows || cols == 1) {
            return GemmOperand(base: base, transposed: true, ld: Swift.max(colStride, rows, 1))
        }
        return nil
    }

    /// C[m×n] = A[m×k]·B[k×n] + beta·C, row-major C with leading dimension `ldc`.
    static func gemm(
        _ dtype: DType, m: Int, n: Int, k: Int, _ a: GemmOperand, _ b: GemmOperand,
        beta: Double, _ c: UnsafeMutableRawPointer, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        if dtype == .float32 {
            let (a, keepA) = unaliased(a, rows: a.transposed ? k : m, cols: a.transposed ? m : k, work: m * n * k)
            let (b, keepB) = unaliased(b, rows: b.transposed ? n : k, cols: b.transposed ? k : n, work: m * n * k)
            defer { withExtendedLifetime((keepA, keepB)) {} }
            let ta = CChar(UInt8(ascii: a.transposed ? "T" : "N")), tb = CChar(UInt8(ascii: b.transposed ? "T" : "N"))
            DNNL.check(
                dnnl_sgemm(
                    ta, tb, Int64(m), Int64(n), Int64(k), 1,
                    a.base.assumingMemoryBound(to: Float.self), Int64(a.ld),
                    b.base.assumingMemoryBound(to: Float.self), Int64(b.ld), Float(beta),
                    c.assumingMemoryBound(to: Float.self), Int64(ldc)), "sgemm")
            return
        }
        let pa = a.base.assumingMemoryBound(to: Double.self), pb = b.base.assumingMemoryBound(to: Double.self)
        let pc = c.assumingMemoryBound(to: Double.self)
        for i in 0..<m {
            let row = pc + i * ldc
            for j in 0..<n { row[j] = beta == 0 ? 0 : row[j] * beta }
            for p in 0..<k {
                let av = a.transposed ? pa[p * a.ld + i] : pa[i * a.ld + p]
                if av == 0 { continue }
                if b.transposed {
                    for j in 0..<n { row[j] += av * pb[j * b.ld + p] }
                } else {
                    let brow = pb + p * b.ld
                    for j in 0..<n { row[j] += av * brow[j] }
                }
            }
        }
    }

    /// A leading dimension of 512 floats maps every row to the same cache sets: oneDNN's SGEMM drops
    /// from ~165 to ~110 GFLOP/s at n = 512 on the development machine. Such operands are copied with 16
    /// floats of padding per row (an O(n²) copy against O(n³) work); padding C as well measured no better.
    /// Returns the operand to use and the copy that must stay alive until the product is done.
    private static func unaliased(_ op: GemmOperand, rows: Int, cols: Int, work: Int) -> (GemmOperand, Tensor?) {
        guard op.ld == 512, work >= 64 * 64 * 64 else { return (op, nil) }
        let ld = cols + 16
        let t = Tensor(empty: [rows, ld], dtype: .float32)
        let src = op.base.assumingMemoryBound(to: Float.self), dst = t.pointer(Float.self)
        for r in 0..<rows { (dst + r * ld).update(from: src + r * op.ld, count: cols) }
        return (GemmOperand(base: t.rawPointer, transposed: op.transposed, ld: ld), t)
    }

    /// Matrix product with NumPy/PyTorch semantics: 1-D operands are promoted and the added dimension
    /// removed; leading (batch) dimensions broadcast.
    ///
    /// `precision` (default: ``Autocast/precision``) `.bfloat16` or `.float16` (float32 operands only): as in
    /// ``linear(weight:bias:precision:)``, the products, forward and backward, take operands rounded to that type and
    /// accumulate in float32; result and gradients stay float32.
    public func matmul(_ other: Tensor, precision: DType? = nil) -> Tensor {
        requireCompute("matmul")
        require(
            dtype == other.dtype,
            "matmul: expected both operands to have the same dtype, got \(dtype) and \(other.dtype)")
        require(
            rank >= 1 && other.rank >= 1,
            "matmul: both arguments need at least 1 dimension, got \(shape) and \(other.shape)")
        if rank == 1 && other.rank == 1 {
            return unsqueeze(0).matmul(other.unsqueeze(1), precision: precision).reshape([])
        }
        if rank == 1 { return unsqueeze(0).matmul(other, precision: precision).squeeze(-2) }
        if other.rank == 1 { return matmul(other.unsqueeze(1), precision: precision).squeeze(-1) }
        let m = shape[rank - 2], k = shape[rank - 1], k2 = other.shape[other.rank - 2], n = other.shape[other.rank - 1]
        require(
            k == k2,
            """
            matmul: mat1 and mat2 shapes cannot be multiplied (\(m)x\(k) and \(k2)x\(n)); shapes \(shape) and \
            \(other.shape)
            """
        )
        guard let batch = Tensor.broadcastShapes(Array(shape.dropLast(2)), Array(other.shape.dropLast(2))) else {
            fatalError("matmul: batch dimensions of \(shape) and \(other.shape) cannot be broadcast")
        }
        let low = dtype == .float32 ? precision ?? Autocast.precision : .float32
        if low != .float32 && LowPrecision.kernels(low, "matmul") == .reference {
            return LowPrecision.reference(self, other, nil, low) { a, b, _ in a.matmul(b, precision: .float32) }
        }
        let a = detached(), b = other.detached()
        var y = noGrad {
            low == .float32
                ? Tensor.batchedProduct(a, b, batch: batch, m: m, k: k, n: n)
                : Tensor.lowPrecisionProduct(a, b, batch: batch, m: m, k: k, n: n, low)
        }
        if Tensor.needsGrad(self, other) {
            let needA = node != nil, needB = other.node != nil
            y.recordGrad("matmul", [self, other]) { g in
                [
                    needA ? g.matmul(b.transpose(-1, -2), precision: low).sumToShape(a.shape) : nil,
                    needB ? a.transpose(-1, -2).matmul(g, precision: low).sumToShape(b.shape) : nil
                ]
            }
        }
        return y
    }

    /// `a · b` (float32, batch dimensions broadcast to `batch`) on `dtype` copies with float32 accumulation.
    private static func lowPrecisionProduct(
        _ a: Tensor, _ b: Tensor, batch: [Int], m: Int, k: Int, n: Int,
        _ dtype: DType
    ) -> Tensor {
        let nb = batch.reduce(1, *)
        if nb * m * n * k == 0 { return batchedProduct(a, b, batch: batch, m: m, k: k, n: n) }
        // oneDNN takes no zero (broadcast) strides: such operands are copied.
        func strided(_ t: Tensor) -> Tensor { t.strides.contains(0) ? t.contiguous() : t }
        // One right-hand matrix: the batch folds into the rows.
        let y =
            b.rank == 2
            ? LowPrecision.matmul(strided(a.reshape([-1, k])), strided(b), dtype)
            : LowPrecision.matmul(
                strided(a.expand(batch + [m, k]).reshape([nb, m, k])),
                strided(b.expand(batch + [k, n]).reshape([nb, k, n])), dtype)
        return y.reshape(batch + [m, n])
    }

    private static func batchedProduct(_ a: Tensor, _ b: Tensor, batch: [Int], m: Int, k: Int, n: Int) -> Tensor {
        var a = a.expand(batch + [m, k]), b = b.expand(batch + [k, n])
        let out = Tensor(empty: batch + [m, n], dtype: a.dtype)
        let nb = batch.reduce(1, *)
        let r = batch.count
        if gemmOperand(a, rows: m, cols: k, rowStride: a.strides[r], colStride: a.strides[r + 1], offset: a.offset)
            == nil
        {
            a = a.contiguous()
        }
        if gemmOperand(b, rows: k, cols: n, rowStride: b.strides[r], colStride: b.strides[r + 1], offset: b.offset)
            == nil
        {
            b = b.contiguous()
        }
        var idx = [Int](repeating: 0, count: r)
        for bi in 0..<nb {
            var oa = a.offset, ob = b.offset
            for d in 0..<r { oa += idx[d] * a.strides[d]; ob += idx[d] * b.strides[d] }
            let opA = gemmOperand(
                a, rows: m, cols: k, rowStride: a.strides[r], colStride: a.strides[r + 1], offset: oa)!
            let opB = gemmOperand(
                b, rows: k, cols: n, rowStride: b.strides[r], colStride: b.strides[r + 1], offset: ob)!
            gemm(
                a.dtype, m: m, n: n, k: k, opA, opB, beta: 0,
                out.storage.data + bi * m * n * a.dtype.byteSize, ldc: n)
            var d = r - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < batch[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// `self · weightᵀ + bias` over the last dimension (PyTorch's `F.linear`): weight is `[out, in]`.
    ///
    /// `precision` (default: ``Autocast/precision``) `.bfloat16` or `.float16` (float32 operands only): the products,
    /// forward and backward, take
    /// operands rounded to that type and accumulate in float32; result and gradients stay float32. Check
    /// ``CPUFeatures/lowPrecisionUnavailable(_:)`` first.
    public func linear(weight: Tensor, bias: Tensor? = nil, precision: DType? = nil) -> Tensor {
        requireCompute("linear")
        require(
            weight.rank == 2 && rank >= 1 && shape[rank - 1] == weight.shape[1],
            "linear: mat1 and mat2 shapes cannot be multiplied (input \(shape), weight \(weight.shape))")
        require(
            weight.dtype == dtype && (bias?.dtype ?? dtype) == dtype,
            """
            linear: expected input, weight and bias of one dtype, got \(dtype), \(weight.dtype), \
            \(bias?.dtype ?? dtype)
            """
        )
        let outF = weight.shape[0], inF = weight.shape[1]
        if let bias {
            require(bias.shape == [outF], "linear: bias shape \(bias.shape) does not match out_features \(outF)")
        }
        let x2 = reshape([-1, inF]).detached()
        let precision = precision ?? Autocast.precision
        if precision != .float32 && dtype == .float32 {
            return lowPrecisionLinear(x2, weight: weight, bias: bias, precision)
        }
        let rows = x2.shape[0]
        var y = Tensor.zeros([rows, outF], dtype: dtype)
        noGrad {
            let w = weight.detached()
            let x =
                Tensor.gemmOperand(
                    x2, rows: rows, cols: inF, rowStride: x2.strides[0], colStride: x2.strides[1], offset: x2.offset)
                    != nil ? x2 : x2.contiguous()
            let wt =
                Tensor.gemmOperand(
                    w, rows: outF, cols: inF, rowStride: w.strides[0], colStride: w.strides[1], offset: w.offset) != nil
                ? w : w.contiguous()
            if let bias { y.copyElements(from: bias.detached().reshape([1, outF])) }
            let opX = Tensor.gemmOperand(
                x, rows: rows, cols: inF, rowStride: x.strides[0], colStride: x.strides[1], offset: x.offset)!
            // weightᵀ as a [in, out] operand: element (p, j) is w[j, p].
            let opW = Tensor.gemmOperand(
                wt, rows: inF, cols: outF, rowStride: wt.strides[1], colStride: wt.strides[0], offset: wt.offset)!
            Tensor.gemm(dtype, m: rows, n: outF, k: inF, opX, opW, beta: bias == nil ? 0 : 1, y.storage.data, ldc: outF)
        }
        y = y.reshape(Array(shape.dropLast()) + [outF])
        let inputs = [self, weight] + (bias.map { [$0] } ?? [])
        if inputs.contains(where: { $0.node != nil }) && GradMode.isEnabled {
            let x = x2, w = weight.detached(), inShape = shape
            let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
            y.recordGrad("linear", inputs) { g in
                let g2 = g.reshape([-1, outF])
                var grads: [Tensor?] = [
                    needX ? g2.matmul(w, precision: .float32).reshape(inShape) : nil,
                    needW ? g2.transpose(0, 1).matmul(x, precision: .float32) : nil
                ]
                if bias != nil { grads.append(needB ? g2.sum(dims: [0]) : nil) }
                return grads
            }
        }
        return y
    }

    /// ``linear(weight:bias:precision:)``'s low-precision path: `x2` is the input as `[rows, in]`.
    private func lowPrecisionLinear(_ x2: Tensor, weight: Tensor, bias: Tensor?, _ precision: DType) -> Tensor {
        if LowPrecision.kernels(precision, "linear") == .reference {
            return LowPrecision.reference(self, weight, bias, precision) {
                $0.linear(weight: $1, bias: $2, precision: .float32)
            }
        }
        let w = weight.detached(), outF = w.shape[0], inShape = shape
        var y = LowPrecision.matmul(x2, w.transpose(0, 1), bias: bias?.detached(), precision)
            .reshape(Array(shape.dropLast()) + [outF])
        let inputs = [self, weight] + (bias.map { [$0] } ?? [])
        if inputs.contains(where: { $0.node != nil }) && GradMode.isEnabled {
            let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
            y.recordGrad("linear", inputs) { g in
                let g2 = g.reshape([-1, outF]).detached()
                var grads: [Tensor?] = [
                    needX ? LowPrecision.matmul(g2, w, precision).reshape(inShape) : nil,
                    needW ? LowPrecision.matmul(g2.transpose(0, 1), x2, precision) : nil
                ]
                // The bias gradient sums the rounded output gradient, as the convolutions' kernels do.
                if bias != nil { grads.append(needB ? g2.to(precision).to(.float32).sum(dims: [0]) : nil) }
                return grads
            }
        }
        return y
    }
}
