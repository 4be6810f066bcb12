import FuzzSupport
import SwiftAIVision

/// libFuzzer entry point: `Image.decode` (JPEG or PNG) must answer every input with an image or a typed error.
///
/// The first byte picks the mode (its low bit: RGB or gray) and whether JPEG DCT scaling is asked for (bit 1);
/// the rest is the file. At most 4,000,000 pixels are decoded, so memory stays bounded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let options = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let needed: ((Int, Int) -> (width: Int, height: Int))? = options & 2 == 0 ? nil : { w, h in (w / 5, h / 3) }
    do {
        _ = try Image.decode(bytes, path: "fuzz", mode: options & 1 == 0 ? .rgb : .gray, maxPixels: 4_000_000, neededSize: needed)
    } catch { expected(error) }
    return 0
}

@main enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
