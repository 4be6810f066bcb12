import FuzzSupport
import SwiftAIData

/// libFuzzer entry point: `IDX.decode` (plain or gzip) must answer every input with a tensor or a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do { _ = try IDX.decode(Array(UnsafeBufferPointer(start: data, count: size))) } catch { expected(error) }
    return 0
}

@main enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
