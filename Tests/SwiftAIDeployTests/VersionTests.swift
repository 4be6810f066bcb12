import SwiftAICore
import Testing
import SwiftAIDeploy

@Suite struct VersionTests {
    @Test func versionIsSemantic() {
        #expect(SwiftAIVersion.string.split(separator: ".").compactMap { Int($0) }.count == 3)
    }
}
