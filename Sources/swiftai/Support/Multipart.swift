import Foundation

/// The first file part of a `multipart/form-data` body (RFC 7578), without copying more than it.
enum Multipart {
    struct Malformed: Error { let reason: String }

    static func firstFile(_ body: [UInt8], contentType: String) -> Result<[UInt8], Malformed> {
        guard
            let b = contentType.split(separator: ";").lazy.map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })
        else {
            return .failure(Malformed(reason: "malformed multipart: no boundary in the Content-Type"))
        }
        let boundary = String(b.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        guard !boundary.isEmpty, boundary.utf8.count <= 200 else {
            return .failure(Malformed(reason: "malformed multipart: bad boundary"))
        }
        let delimiter = Array("--\(boundary)".utf8), crlf2: [UInt8] = [13, 10, 13, 10]
        var parts: [[UInt8]] = []
        var i = find(delimiter, in: body, from: 0)
        while let start = i {
            let afterDelimiter = start + delimiter.count
            // "--" after the delimiter: the end
            if body.count >= afterDelimiter + 2, body[afterDelimiter] == 45, body[afterDelimiter + 1] == 45 { break }
            guard let headersEnd = find(crlf2, in: body, from: afterDelimiter) else { break }
            let next = find([13, 10] + delimiter, in: body, from: headersEnd + 4)
            guard let end = next else {
                return .failure(Malformed(reason: "malformed multipart: a part has no closing boundary"))
            }
            let headers = String(decoding: body[afterDelimiter..<headersEnd], as: UTF8.self).lowercased()
            let content = Array(body[(headersEnd + 4)..<end])
            if headers.contains("filename=") { return .success(content) }
            parts.append(content)
            i = end + 2
        }
        if let first = parts.first { return .success(first) }
        return .failure(Malformed(reason: "malformed multipart: no part found (boundary \(boundary))"))
    }

    private static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count, from <= hay.count - needle.count else { return nil }
        let first = needle[0]
        var i = from
        while i <= hay.count - needle.count {
            if hay[i] == first && hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
