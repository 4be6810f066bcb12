import ArgumentParser
import SwiftAICore

@main
struct SwiftAICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftai",
        abstract: "SwiftAI: fastai-style deep learning in Swift.",
        subcommands: [Demo.self, Bench.self])
}

/// Formats one JSON object per line with keys in the given order (the benchmark output contract).
func jsonLine(_ pairs: KeyValuePairs<String, Any>) -> String {
    func encode(_ v: Any) -> String {
        switch v {
        case let s as String:
            return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case let d as Double:
            return d.isFinite ? String((d * 10).rounded() / 10) : "null"
        case let i as Int: return String(i)
        case let b as Bool: return b ? "true" : "false"
        default: return "\"\(v)\""
        }
    }
    return "{" + pairs.map { "\"\($0.key)\":" + encode($0.value) }.joined(separator: ",") + "}"
}
