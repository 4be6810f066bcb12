import Foundation
import Testing
import SwiftAICore
import SwiftAITestSupport
@testable import SwiftAIVision

/// Decoding against PIL's decodes of the committed fixtures (scripts/make_imageio_fixtures.py), writers, and the
/// typed errors of bad files.
@Suite struct ImageIOTests {
    static func fixture(_ name: String) -> String { committedFixture("SwiftAIVisionTests", "imageio/" + name) }

    static func references() throws -> [String: Tensor] {
        try Safetensors.read(path: fixture("reference.safetensors")).tensors
    }

    /// Largest and mean absolute difference between a decode and PIL's (shape [H, W, C]); nil on a shape mismatch.
    static func difference(_ image: Image, _ reference: Tensor?) -> (max: Int, mean: Double)? {
        guard let reference, reference.shape == [image.height, image.width, image.channels] else { return nil }
        let diffs = zip(image.pixels, reference.scalars(as: UInt8.self)).map { abs(Int($0) - Int($1)) }
        return (diffs.max() ?? 0, Double(diffs.reduce(0, +)) / Double(max(diffs.count, 1)))
    }

    static func expectError(
        _ expected: (ImageError) -> Bool, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Any
    ) {
        do {
            _ = try body()
            Issue.record("\(what): no error", sourceLocation: sourceLocation)
        } catch let error as ImageError {
            #expect(expected(error), "\(what): \(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(what): \(error) is not an ImageError", sourceLocation: sourceLocation)
        }
    }

    static let pngs = [
        "gray1", "gray2", "gray4", "gray8", "gray16", "gray8_trns", "graya8", "graya16", "pal1", "pal2",
        "pal4", "pal8", "pal4_trns", "rgb8", "rgb16", "rgb8_trns", "rgba8", "rgba16", "rgb8_interlaced",
        "pal4_interlaced", "gray16_interlaced"
    ]

    @Test func everyPNGColourTypeAndBitDepthDecodesExactlyAsPIL() throws {
        let refs = try Self.references()
        for name in Self.pngs {
            let file = name + ".png"
            for mode in [ImageMode.rgb, .gray] {
                let image = try Image.read(Self.fixture(file), mode: mode)
                let d = Self.difference(image, refs["\(file).\(mode.rawValue)"])
                #expect(d?.max == 0, "\(file) \(mode): \(String(describing: d)) vs PIL")
            }
            #expect(try Image.size(ofImageAt: Self.fixture(file)) == (13, 9))
        }
    }

    @Test func jpegsDecodeWithinTwoOfPIL() throws {
        let refs = try Self.references()
        for file in ["jpeg420.jpg", "jpeg444.jpg", "jpeggray.jpg", "jpegcmyk.jpg", "jpegprogressive.jpg"] {
            for mode in [ImageMode.rgb, .gray] {
                let image = try Image.read(Self.fixture(file), mode: mode)
                let d = Self.difference(image, refs["\(file).\(mode.rawValue)"])
                #expect(d != nil && d!.max <= 2 && d!.mean < 0.2, "\(file) \(mode): \(String(describing: d)) vs PIL")
            }
        }
        let gray = try Image.read(Self.fixture("jpeggray.jpg"))
        let replicated = (0..<gray.width * gray.height).allSatisfy { (i: Int) -> Bool in
            gray.pixels[3 * i] == gray.pixels[3 * i + 1] && gray.pixels[3 * i] == gray.pixels[3 * i + 2]
        }
        #expect(gray.channels == 3 && replicated)
    }

    @Test func exifOrientationsMatchPILExifTranspose() throws {
        let refs = try Self.references()
        for o in 2...8 {
            let file = "orientation\(o).jpg"  // odd orientations have big-endian EXIF, even little-endian
            let image = try Image.read(Self.fixture(file))
            #expect((image.width, image.height) == (o >= 5 ? (37, 45) : (45, 37)), "\(file)")
            let d = Self.difference(image, refs[file + ".rgb"])
            #expect(d != nil && d!.max <= 2 && d!.mean < 0.2, "\(file): \(String(describing: d)) vs PIL")
            #expect(try Image.size(ofImageAt: Self.fixture(file)) == (image.width, image.height), "\(file)")
        }
    }

    @Test func dctScalingPicksTheSmallestSufficientFactor() throws {
        let path = Self.fixture("large420.jpg")  // 100x60
        let cases: [(need: (Int, Int), size: (Int, Int))] = [
            ((12, 7), (13, 8)), ((13, 8), (13, 8)), ((14, 8), (25, 15)), ((25, 15), (25, 15)), ((30, 20), (50, 30)),
            ((50, 30), (50, 30)), ((51, 10), (100, 60)), ((200, 200), (100, 60))
        ]
        for c in cases {
            var seen: (Int, Int)?
            let image = try Image.read(path) { w, h in
                seen = (w, h); return c.need
            }
            #expect(seen.map { $0 == (100, 60) } == true)
            #expect((image.width, image.height) == c.size, "needed \(c.need)")
        }
        let refs = try Self.references()
        for d in [2, 4, 8] {
            let image = try Image.read(path) { w, h in ((w + d - 1) / d, (h + d - 1) / d) }
            let diff = Self.difference(image, refs["scaled\(d).rgb"])
            #expect(
                diff != nil && diff!.max <= 2 && diff!.mean < 0.3, "1/\(d): \(String(describing: diff)) vs PIL draft")
        }
        // Orientation 6 stores 45x37 rotated to 37x45: the needed size is asked and given in the rotated frame.
        var seen: (Int, Int)?
        let rotated = try Image.read(Self.fixture("orientation6.jpg")) { w, h in
            seen = (w, h); return (1, 6)
        }
        #expect(seen.map { $0 == (37, 45) } == true)
        #expect((rotated.width, rotated.height) == (5, 6))  // 1/8: stored 6x5 ≥ 6x1 (unswapped, 1x6 would need 1/4)
        let png = try Image.read(Self.fixture("rgb8.png")) { _, _ in (1, 1) }
        #expect((png.width, png.height) == (13, 9))
    }

    @Test func writersRoundTrip() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (w, h) in [(1, 1), (7, 5), (33, 17), (64, 48)] {
            for channels in [1, 3] {
                var image = Image(width: w, height: h, channels: channels)
                for y in 0..<h {
                    for x in 0..<w {
                        for c in 0..<channels { image[y, x, c] = UInt8(20 + 100 * x / w + 50 * y / h + 40 * c) }
                    }
                }
                let mode: ImageMode = channels == 3 ? .rgb : .gray
                let png = "\(dir)/\(w)x\(h)x\(channels).png", jpg = "\(dir)/\(w)x\(h)x\(channels).jpg"
                try image.writePNG(to: png)
                try image.writePNG(to: png)  // overwriting is fine
                #expect(try Image.read(png, mode: mode) == image)
                #expect(try Image.size(ofImageAt: png) == (w, h))
                try image.writeJPEG(to: jpg, quality: 95)
                let decoded = try Image.read(jpg, mode: mode)
                #expect(try Image.size(ofImageAt: jpg) == (w, h))
                let d = Self.difference(decoded, image.tensor.permute([1, 2, 0]).contiguous())
                #expect(d != nil && d!.mean < 1.5, "\(jpg): \(String(describing: d))")
            }
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(files.count == 16, "no temporary files left: \(files.sorted())")
        Self.expectError(
            { if case .writeFailed(let p, _) = $0 { return p.hasSuffix("missing/x.png") } else { return false } },
            "write into a missing folder"
        ) { try Image(width: 2, height: 2, channels: 3).writePNG(to: dir + "/missing/x.png") }
    }

    @Test func truncatedJPEGsAreRefusedAndHarmlessWarningsAccepted() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for file in ["jpeg420.jpg", "jpegprogressive.jpg"] {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixture(file))))
            for (what, cut) in [
                ("half", Array(bytes.prefix(bytes.count / 2))), ("no end marker", Array(bytes.dropLast(2)))
            ] {
                let path = "\(dir)/\(what) \(file)"
                try Data(cut).write(to: URL(fileURLWithPath: path))
                Self.expectError(
                    { if case .corrupt(path, let r) = $0 { return r.contains("truncated") } else { return false } },
                    "\(what) \(file)"
                ) { try Image.read(path) }
            }
            // libjpeg warns about bytes between segments but decodes the same pixels, as PIL does.
            let sos = (2..<bytes.count - 1).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xDA }!
            let padded = Array(bytes[..<sos]) + [0, 0, 0] + Array(bytes[sos...])
            #expect(try Image.decode(padded, path: "padded") == Image.read(Self.fixture(file)))
        }
    }

    /// Found by FuzzImage (docs/fuzzing.md): a 130-byte PNG whose `zTXt` chunk claims 1 311 296 258 bytes made libpng
    /// allocate that much before finding the file truncated. Chunks are now checked against the file first.
    @Test func pngChunkClaimingMoreThanTheFileIsRefusedBeforeLibpng() {
        let bomb: [UInt8] = [
            0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
            0x00, 0x0D,
            0x00, 0x00, 0x00, 0x09, 0x04, 0x03, 0x00, 0x00, 0x00, 0x1B, 0x54, 0xBB, 0x59, 0x4E, 0x28, 0xCB, 0x02, 0x7A,
            0x54, 0x58,
            0x74, 0x0A, 0x13, 0x04, 0x2C, 0xD0, 0xA6, 0xE9, 0x80, 0x9B, 0xF8, 0xBA, 0xA1, 0x8B, 0x8F, 0xEF, 0x47, 0xD0,
            0xAB, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x2C, 0x16, 0xDC, 0x05, 0x8A, 0x14, 0x4C, 0x7B, 0x6C, 0x67, 0x07,
            0x01, 0x1F,
            0x02, 0xAB, 0x86, 0xA5, 0x93, 0x8D, 0xDB, 0x55, 0x00, 0x00, 0x00, 0x10, 0x74, 0x52, 0x4E, 0x53, 0x7E, 0x07,
            0x2C, 0xF0,
            0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x3C, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B,
            0x6B, 0x6B,
            0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x6B, 0x82
        ]
        for mode in [ImageMode.rgb, .gray] {
            Self.expectError(
                {
                    $0
                        == .corrupt(
                            path: "bomb",
                            reason: "PNG is truncated: its 'zTXt' chunk claims 1311296258 bytes but only 85 follow")
                },
                "zTXt bomb"
            ) { try Image.decode(bomb, path: "bomb", mode: mode, maxPixels: 4_000_000) }
        }
    }

    @Test func badFilesThrowTypedErrorsNamingTheFile() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func file(_ name: String, _ bytes: [UInt8]) throws -> String {
            try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
            return "\(dir)/\(name)"
        }
        let empty = try file("empty.jpg", [])
        Self.expectError({ $0 == .corrupt(path: empty, reason: "empty file (0 bytes)") }, "zero bytes") {
            try Image.read(empty)
        }
        let text = try file("notes.jpg", Array("just some text, not a picture\n".utf8))
        Self.expectError({ $0 == .notAnImage(path: text) }, "text") { try Image.read(text) }
        Self.expectError({ $0 == .notAnImage(path: text) }, "text size") { try Image.size(ofImageAt: text) }
        let garbage = try file("garbage.jpg", [0xFF, 0xD8, 0xFF] + [UInt8](repeating: 0x41, count: 300))
        Self.expectError({ if case .corrupt(garbage, _) = $0 { return true } else { return false } }, "garbage JPEG") {
            try Image.read(garbage)
        }
        let png = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixture("rgb8.png"))))
        let halfPNG = try file("half.png", Array(png.prefix(png.count / 2)))
        Self.expectError(
            { if case .corrupt(halfPNG, let r) = $0 { return r.contains("truncated") } else { return false } },
            "half PNG"
        ) { try Image.read(halfPNG) }
        var badCRC = png
        badCRC[29] ^= 0xFF  // IHDR's CRC
        let crc = try file("crc.png", badCRC)
        Self.expectError(
            { if case .corrupt(crc, let r) = $0 { return r.contains("CRC") } else { return false } }, "bad CRC"
        ) { try Image.read(crc) }

        let huge = Self.fixture("huge_header.png")  // IHDR claims 30000x30000, no pixel data
        Self.expectError(
            { $0 == .tooLarge(path: huge, width: 30000, height: 30000, limit: Image.defaultMaxPixels) }, "huge PNG"
        ) {
            try Image.read(huge)
        }
        #expect(try Image.size(ofImageAt: huge) == (30000, 30000))
        var absurd = try [UInt8](Data(contentsOf: URL(fileURLWithPath: huge)))
        // 2^32-1 squared: refused, no overflow
        absurd.replaceSubrange(16..<24, with: [UInt8](repeating: 0xFF, count: 8))
        Self.expectError(
            { if case .corrupt("absurd", let r) = $0 { return r.contains("invalid size") } else { return false } },
            "absurd PNG size"
        ) { try Image.decode(absurd, path: "absurd") }
        let jpeg = Self.fixture("jpeg420.jpg")
        Self.expectError({ $0 == .tooLarge(path: jpeg, width: 45, height: 37, limit: 1000) }, "JPEG over maxPixels") {
            try Image.read(jpeg, maxPixels: 1000)
        }
        Self.expectError(
            {
                if case .unreadable(let p, let r) = $0 {
                    return p == dir + "/missing.png" && r.contains("No such file")
                } else {
                    return false
                }
            },
            "missing"
        ) { try Image.read(dir + "/missing.png") }
        Self.expectError({ $0 == .unreadable(path: dir, reason: "is a directory") }, "directory") {
            try Image.read(dir)
        }
        #expect(ImageError.corrupt(path: empty, reason: "empty file (0 bytes)").description.contains(empty))
    }
}
