import Foundation
import Testing
import SwiftAICore
import SwiftAINN
import SwiftAIData

/// `../shared/fixtures` next to the package (or `SWIFTAI_FIXTURES`), if present.
public let fixturesDirectory: String? = {
    if let env = ProcessInfo.processInfo.environment["SWIFTAI_FIXTURES"] { return env }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let dir = root.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
    return FileManager.default.fileExists(atPath: dir) ? dir : nil
}()

/// Loads a fixture file; `nil` (and a printed note) when the shared folder is absent.
public func loadFixture(_ name: String) throws -> (tensors: [String: Tensor], metadata: [String: String])? {
    guard let dir = fixturesDirectory else {
        print("note: ../shared/fixtures not found; skipping \(name) fixture checks")
        return nil
    }
    return try Safetensors.read(path: dir + "/" + name + ".safetensors")
}

/// Largest violation of |a − b| ≤ atol + rtol·|b| (≤ 0 means within tolerance), and where.
public func closeness(_ a: Tensor, _ b: Tensor, rtol: Double, atol: Double) -> (ok: Bool, detail: String) {
    guard a.shape == b.shape else { return (false, "shape \(a.shape) vs \(b.shape)") }
    let x = a.doubles, y = b.doubles
    var worst = 0.0, at = -1
    for i in x.indices {
        let excess = abs(x[i] - y[i]) - (atol + rtol * abs(y[i]))
        if excess > worst || x[i].isNaN != y[i].isNaN { worst = max(excess, worst); at = i }
    }
    if at < 0 { return (true, "") }
    return (false, "element \(at): \(x[at]) vs \(y[at]) (excess \(worst))")
}

/// Expects `a` ≈ `b` elementwise.
public func expectClose(
    _ a: Tensor, _ b: Tensor, rtol: Double = 1e-4, atol: Double = 1e-5, _ what: String = "",
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let r = closeness(a, b, rtol: rtol, atol: atol)
    #expect(r.ok, "\(what): \(r.detail)", sourceLocation: sourceLocation)
}

/// Finite-difference gradient check in Float64.
///
/// Back-propagates a fixed random upstream gradient `v` through `f` and compares every input's gradient
/// with central differences of `sum(f(x) · v)`.
public func gradcheck(
    _ inputs: [Tensor], eps: Double = 1e-6, rtol: Double = 1e-4, atol: Double = 1e-6, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Tensor]) -> Tensor
) {
    let xs = inputs.map { $0.to(.float64).contiguous().detached().requiringGrad() }
    let y = f(xs)
    let v = Tensor.randn(y.shape, dtype: .float64, generator: Generator(seed: 99))
    (y * v).sum().backward()
    for (i, x) in xs.enumerated() {
        guard let analytic = x.grad else {
            Issue.record("\(what): input \(i) received no gradient", sourceLocation: sourceLocation)
            continue
        }
        var values = x.doubles
        var numeric = [Double](repeating: 0, count: values.count)
        for j in values.indices {
            let orig = values[j]
            func loss(_ at: Double) -> Double {
                values[j] = at
                var args = xs.map { $0.detached() }
                args[i] = Tensor(values, shape: x.shape)
                return noGrad { (f(args) * v).sum().item() }
            }
            numeric[j] = (loss(orig + eps) - loss(orig - eps)) / (2 * eps)
            values[j] = orig
        }
        let r = closeness(analytic, Tensor(numeric, shape: x.shape), rtol: rtol, atol: atol)
        #expect(r.ok, "\(what): gradient of input \(i): \(r.detail)", sourceLocation: sourceLocation)
    }
}

/// Random Float64 values kept at least `margin` away from 0 (for ops with a kink at 0).
public func awayFromZero(_ shape: [Int], seed: UInt64, margin: Double = 0.1) -> Tensor {
    let r = Tensor.randn(shape, dtype: .float64, generator: Generator(seed: seed))
    return Tensor(r.doubles.map { $0 + ($0 >= 0 ? margin : -margin) }, shape: shape)
}

/// Random Float64 normal values.
public func randn(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
    Tensor.randn(shape, std: scale, dtype: .float64, generator: Generator(seed: seed))
}

/// The path of a small fixture committed with the tests: `Tests/<target>/Fixtures/<name>`.
public func committedFixture(_ target: String, _ name: String) -> String {
    let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    return tests.appendingPathComponent(target).appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

/// A fresh empty temporary directory (removed by the caller when it wants).
public func makeTemporaryDirectory(_ prefix: String = "swiftai-test") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Gives every BatchNorm non-trivial running statistics and affine parameters, so that folding, exporting or
/// loading them is actually exercised.
public func randomiseBatchNorms(_ model: Module, seed: UInt64) {
    for (i, m) in model.modules().enumerated() {
        guard let bn = m as? BatchNorm, let mean = bn.runningMean, let variance = bn.runningVar else { continue }
        let n = mean.value.count, s = seed &+ UInt64(i) &* 4
        mean.value = randn([n], seed: s, scale: 0.2).to(.float32)
        variance.value = (randn([n], seed: s + 1, scale: 0.3).abs() + 0.5).to(.float32)
        bn.weight?.setData(randn([n], seed: s + 2, scale: 0.3) + 1)
        bn.bias?.setData(randn([n], seed: s + 3, scale: 0.1))
    }
}

/// A folder in the temporary directory for this process's test files named `name`.
public func tempDir(_ name: String) -> String {
    let d = NSTemporaryDirectory() + "swiftai-\(name)-\(getpid())"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// Training-only Gaussian noise drawn from the batch's generator.
public struct Noise: BatchTransform {
    public init() {}
    public var order: Int { 50 }
    public func apply(_ batch: Batch, generator: Generator, training: Bool) -> Batch {
        training ? (batch.x + Tensor.randn(batch.x.shape, std: 0.05, generator: generator), batch.y) : batch
    }
}
