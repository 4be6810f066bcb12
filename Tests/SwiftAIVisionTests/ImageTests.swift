import Testing
import SwiftAICore
@testable import SwiftAIVision

@Suite struct ImageTests {
    @Test func tensorIsChannelsFirstViewOfInterleavedPixels() {
        var img = Image(width: 3, height: 2, channels: 3)
        img[1, 2, 0] = 7
        img[0, 1, 2] = 9
        let t = img.tensor
        #expect(t.shape == [3, 2, 3])
        #expect(t[element: [0, 1, 2]] == 7 && t[element: [2, 0, 1]] == 9)
    }
}
