import Foundation
import Testing
import SwiftAICore
import SwiftAIData

/// `IDX.decode` on plain and gzip bytes, and the inputs Fuzz/ found (docs/fuzzing.md).
@Suite struct IDXTests {
    /// `[2, 3]` values 0…5, gzip-compressed (Python's `gzip.compress(…, mtime=0)`).
    static let gzipped: [UInt8] = [
        0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63, 0x60, 0xE0, 0x60, 0x62, 0x60, 0x60, 0x00,
        0x61, 0x66, 0x06, 0x46, 0x26, 0x66, 0x16, 0x56, 0x00, 0x26, 0x2C, 0x23, 0x54, 0x12, 0x00, 0x00, 0x00
    ]
    /// The same bytes as two gzip members (`cat a.gz b.gz`), split after the sixth byte.
    static let twoMembers: [UInt8] = [
        0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63, 0x60, 0xE0, 0x60, 0x62, 0x60, 0x00, 0x00,
        0x22, 0x5D, 0xF2, 0x77, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03,
        0x63, 0x60, 0x62, 0x60, 0x60, 0x60, 0x66, 0x60, 0x64, 0x62, 0x66, 0x61, 0x05, 0x00, 0xDA, 0x0B, 0x78, 0x93,
        0x0C, 0x00, 0x00, 0x00
    ]

    @Test func decodesPlainAndGzipBytes() throws {
        let plain: [UInt8] = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5]
        for bytes in [plain, Self.gzipped, Self.twoMembers, Self.gzipped + [0, 0, 0]] {
            let t = try IDX.decode(bytes)
            #expect(t.shape == [2, 3] && t.dtype == .uint8)
            #expect(t.scalars(as: UInt8.self) == [0, 1, 2, 3, 4, 5])
        }
        // A truncated or corrupted gzip stream is an error, not a short tensor.
        #expect(throws: DatasetError.self) { try IDX.decode(Array(Self.gzipped.dropLast(12))) }
        var corrupt = Self.gzipped
        corrupt[14] ^= 0xFF
        #expect(throws: DatasetError.self) { try IDX.decode(corrupt) }
    }

    /// Found by FuzzIDX: sizes 0x00030405 × 0x06070809 × 0x0A0B0C0D overflowed counting the values.
    @Test func sizesWhoseProductOverflowsAreAnError() {
        let crash: [UInt8] = [
            0x00, 0x00, 0x08, 0x03, 0x00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
            0x0E, 0x0F, 0x10, 0x11
        ]
        #expect(
            throws: DatasetError.malformed(
                path: "<memory>", reason: "sizes [197637, 101124105, 168496141] are too large")
        ) {
            try IDX.decode(crash)
        }
        // No values, but sizes the strides of an empty tensor cannot hold.
        let empty: [UInt8] = [0, 0, 8, 4, 0, 0, 0, 0] + [UInt8](repeating: 0xFF, count: 12)
        #expect(throws: DatasetError.self) { try IDX.decode(empty) }
    }

    /// A gzip stream stops inflating once it passes the size its own header declares: 140 bytes claiming 4 values
    /// but holding 100 000 more are refused after the first chunk.
    @Test func decompressionStopsAtTheDeclaredSize() {
        let bomb: [UInt8] =
            [
                0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xED, 0xC1, 0x31, 0x01, 0x00, 0x20, 0x10,
                0x00,
                0xA1, 0x7B, 0x75, 0xB0, 0x7F, 0x62, 0x6B, 0x38, 0x00, 0x75, 0xA7, 0x3A, 0xB3, 0xF6, 0x09
            ] + [UInt8](repeating: 0, count: 96) + [0xF8, 0xD6, 0x03, 0xB4, 0xD5, 0x03, 0x4F, 0xAC, 0x86, 0x01, 0x00]
        #expect(
            throws: DatasetError.malformed(
                path: "<memory>", reason: "it decompresses to more than the 12 bytes its header declares")
        ) {
            try IDX.decode(bomb)
        }
    }
}
