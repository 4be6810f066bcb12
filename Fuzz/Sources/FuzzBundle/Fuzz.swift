import FuzzSupport
import Foundation
import SwiftAIDeploy

/// libFuzzer entry point: `ExportBundle(data:name:)` must answer every input with a model or a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do { _ = try ExportBundle(data: Data(bytes: data, count: size), name: "fuzz.safetensors") } catch { expected(error) }
    return 0
}

@main enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
