import Foundation
import SwiftAICore

/// Fails the scenario on this rank with `message` (the test reads stderr).
struct CheckFailed: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw CheckFailed(message()) }
}

/// Prints one JSON object on stdout (rank 0 only, so the test reads one line).
func report(_ group: ProcessGroup, _ object: [String: Any]) {
    guard group.isMain else { return }
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
