import Testing
@testable import SwiftAICore
import SwiftAITestSupport

/// Programmer errors stop the process with a message naming the op and the shapes (exit tests).
@Suite struct ErrorMessageTests {
    func stderr(of result: ExitTest.Result?) -> String {
        String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    }

    @Test func shapeMismatchNamesOpAndShapes() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([2, 3]).matmul(Tensor.ones([4, 5]))
        }
        #expect(stderr(of: r).contains("matmul: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
        let b = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([2, 3]) + Tensor.ones([4])
        }
        #expect(stderr(of: b).contains("add: the size of tensor a [2, 3] must match the size of tensor b [4]"))
    }

    @Test func indexOutOfRangeAndDTypeClash() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([2, 3])[2]
        }
        #expect(stderr(of: r).contains("index: index 2 is out of bounds for dimension 0 with size 2"))
        let d = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([2]) * Tensor.ones([2], dtype: .float64)
        }
        #expect(stderr(of: d).contains("mul: expected both operands to have the same dtype, got float32 and float64"))
        let c = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.ones([1, 3, 8, 8]).conv2d(weight: Tensor.ones([4, 2, 3, 3]))
        }
        #expect(
            stderr(of: c).contains(
                "conv2d: given groups=1, weight of size [4, 2, 3, 3], expected input [1, 3, 8, 8] to have 2 channels"))
        let g = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = crossEntropy(Tensor.ones([2, 3]), Tensor([Int64(0), 3]))
        }
        #expect(stderr(of: g).contains("nll_loss: target 3 is out of bounds for 3 classes"))
    }
}
