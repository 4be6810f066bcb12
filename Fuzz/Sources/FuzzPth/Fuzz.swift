import FuzzSupport
import Foundation
import SwiftAICore

/// libFuzzer entry point: `PyTorchWeights.decode` (zip and legacy formats) must answer every input with tensors
/// or a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do { _ = try PyTorchWeights.decode(Data(bytes: data, count: size), name: "fuzz.pth") } catch { expected(error) }
    return 0
}

@main enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
