import FuzzSupport
import Foundation
import SwiftAICore

/// libFuzzer entry point: `Safetensors.decode` must answer every input with tensors or a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do { _ = try Safetensors.decode(Data(bytes: data, count: size)) } catch { expected(error) }
    return 0
}

@main enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
