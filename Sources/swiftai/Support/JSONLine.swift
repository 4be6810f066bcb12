import Foundation

/// A number printed with a fixed count of decimals in JSON.
struct Rounded {
    let value: Double, digits: Int
    init(_ value: Double, _ digits: Int) { self.value = value; self.digits = digits }
}

/// A number printed in scientific notation (3 significant digits) in JSON.
struct Scientific {
    let value: Double
    init(_ value: Double) { self.value = value }
}

/// Formats one JSON object per line with keys in the given order (the output contract other tools read).
/// Plain `Double`s get one decimal.
func jsonLine(_ pairs: KeyValuePairs<String, Any>) -> String { jsonLine(pairs.map { ($0.key, $0.value) }) }

/// ``jsonLine(_:)`` for keys built at run time.
func jsonLine(_ pairs: [(String, Any)]) -> String {
    func encode(_ v: Any) -> String {
        switch v {
        case let s as String:
            return "\"" + jsonEscaped(s) + "\""
        case let r as Rounded:
            return r.value.isFinite ? String(format: "%.\(r.digits)f", r.value) : "null"
        case let e as Scientific:
            return e.value.isFinite ? String(format: "%.3g", e.value) : "null"
        case let d as Double:
            return d.isFinite ? String((d * 10).rounded() / 10) : "null"
        case let i as Int: return String(i)
        case let b as Bool: return b ? "true" : "false"
        case let a as [Any]: return "[" + a.map(encode).joined(separator: ",") + "]"
        default: return "\"\(v)\""
        }
    }
    return "{" + pairs.map { "\"\($0.0)\":" + encode($0.1) }.joined(separator: ",") + "}"
}

/// `s` with JSON's string escapes (backslash, quote, control characters).
func jsonEscaped(_ s: String) -> String {
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case _ where ch.value < 0x20: out += String(format: "\\u%04x", ch.value)
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}
