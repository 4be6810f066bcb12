import Foundation

/// A file-system path with fastai's `pathlib` conveniences (`name`, `parent`, `stem`, `path/"child"`).
public struct Path: Hashable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral, Sendable {
    public let string: String

    public init(_ string: String) {
        var s = string
        while s.count > 1 && s.hasSuffix("/") { s.removeLast() }
        self.string = s
    }

    public init(stringLiteral value: String) { self.init(value) }

    /// The last component (`images/beagle_75.jpg` → `beagle_75.jpg`).
    public var name: String {
        string.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? string
    }
    /// The name without its last extension.
    public var stem: String {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return name }
        return String(name[..<dot])
    }
    /// The last extension with its dot, lower-cased (`.jpg`), or "".
    public var suffix: String {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "" }
        return String(name[dot...]).lowercased()
    }
    /// The containing folder.
    public var parent: Path {
        guard let slash = string.lastIndex(of: "/") else { return Path(".") }
        return slash == string.startIndex ? Path("/") : Path(String(string[..<slash]))
    }

    public static func / (lhs: Path, rhs: String) -> Path {
        Path(lhs.string == "/" ? "/" + rhs : lhs.string + "/" + rhs)
    }
    public static func < (lhs: Path, rhs: Path) -> Bool { lhs.string < rhs.string }
    public var description: String { string }

    /// Whether a folder exists at this path.
    public var isDirectory: Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: string, isDirectory: &dir) && dir.boolValue
    }
}

/// Extensions `getImageFiles` collects (lower-cased, as fastai's `image_extensions`; only JPEG and PNG decode,
/// other image files are reported as skipped when loaded).
public let imageExtensions: Set<String> = [
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".tif", ".tiff",
    ".webp", ".ico", ".pbm", ".pgm", ".ppm", ".pnm", ".heic", ".heif", ".avif", ".svg"
]

/// Why a data source could not be used.
public enum DataBlockError: Error, CustomStringConvertible, Equatable {
    case missingFolder(Path)
    case noItems(Path, what: String)
    case labelNotFound(pattern: String, item: String)
    case labelOnlyInValidation(label: String, item: String)
    case emptySplit(which: String, detail: String)
    case collate(shapes: [[Int]])
    case noLoadableItems(skipped: [String])
    case invalid(String)

    public var description: String {
        switch self {
        case let .missingFolder(p):
            return "no folder at \(p): check the path (it must hold the image files or their class folders)"
        case let .noItems(p, what): return "found no \(what) in \(p): check the path and the file extensions"
        case let .labelNotFound(pattern, item):
            return "Failed to find \"\(pattern)\" in \"\(item)\": fix the pattern (its first group is the label)"
        case let .labelOnlyInValidation(label, item):
            return
                """
                Label '\(label)' was not included in the training dataset (validation item \(item)): move some of its \
                items to the training set or change the split
                """
        case let .emptySplit(which, detail): return "the \(which) set is empty (\(detail)): check the split"
        case let .collate(shapes):
            return "Could not collate the 0-th members of your tuples because got the following shapes: "
                + shapes.map { "[" + $0.map(String.init).joined(separator: ", ") + "]" }.joined(separator: ", ")
                + ". Add an item transform that gives every image the same size, e.g. Resize(224)."
        case let .noLoadableItems(skipped):
            return "none of the \(skipped.count) items of a batch could be loaded (first: \(skipped.first ?? "-"))"
        case let .invalid(msg): return msg
        }
    }
}

/// Files below `path` with one of `extensions` (case-insensitive), as fastai's `get_files`: hidden files and
/// folders skipped, `folders` limits the first level, `recurse: false` looks at `path` only. Sorted by path.
public func getFiles(_ path: Path, extensions: Set<String>? = nil, recurse: Bool = true, folders: [String] = []) throws
    -> [Path]
{
    guard path.isDirectory else { throw DataBlockError.missingFolder(path) }
    let fm = FileManager.default
    var out: [Path] = []
    func keep(_ name: String) -> Bool {
        !name.hasPrefix(".") && (extensions.map { $0.contains(Path(name).suffix) } ?? true)
    }
    func walk(_ dir: Path, depth: Int) {
        guard let names = try? fm.contentsOfDirectory(atPath: dir.string) else { return }
        for name in names {
            let p = dir / name
            if p.isDirectory {
                guard recurse, !name.hasPrefix(".") else { continue }
                if depth == 0 && !folders.isEmpty && !folders.contains(name) { continue }
                walk(p, depth: depth + 1)
            } else if keep(name) && (depth > 0 || folders.isEmpty || folders.contains(".")) {
                out.append(p)
            }
        }
    }
    walk(path, depth: 0)
    return out.sorted()
}

/// Image files below `path` (fastai's `get_image_files`).
public func getImageFiles(_ path: Path, recurse: Bool, folders: [String] = []) throws -> [Path] {
    try getFiles(path, extensions: imageExtensions, recurse: recurse, folders: folders)
}

/// Image files below `path`, recursively; `folders` limits the first level.
public func getImageFiles(_ path: Path, folders: [String]) throws -> [Path] {
    try getFiles(path, extensions: imageExtensions, folders: folders)
}

/// Every image file below `path` (so it can be passed as `getItems: getImageFiles`).
public func getImageFiles(_ path: Path) throws -> [Path] { try getFiles(path, extensions: imageExtensions) }

// MARK: Labellers

/// Labels with the first group of a regular expression searched in the item's text (fastai's `RegexLabeller`).
public struct RegexLabeller: @unchecked Sendable {
    public let pattern: String
    let regex: NSRegularExpression
    /// `match: true` anchors the pattern at the start, as Python's `re.match`.
    public init(_ pattern: String, match: Bool = false) throws {
        self.pattern = pattern
        do {
            regex = try NSRegularExpression(pattern: match ? "^(?:" + pattern + ")" : pattern)
        } catch {
            throw DataBlockError.invalid("invalid regular expression \"\(pattern)\": \(error.localizedDescription)")
        }
        guard regex.numberOfCaptureGroups >= 1 else {
            throw DataBlockError.invalid(
                "the pattern \"\(pattern)\" has no group: put the label in parentheses, e.g. (.+)_\\d+.jpg$")
        }
    }

    public func callAsFunction(_ text: String) throws -> String {
        let ns = text as NSString
        guard let m = regex.firstMatch(in: text, range: NSRange(location: 0, length: ns.length)),
            m.range(at: 1).location != NSNotFound
        else {
            throw DataBlockError.labelNotFound(pattern: pattern, item: text)
        }
        return ns.substring(with: m.range(at: 1))
    }

    public func callAsFunction(_ path: Path) throws -> String { try self(path.string) }
}

/// The name of the item's folder (fastai's `parent_label`).
public func parentLabel(_ path: Path) -> String { path.parent.name }

/// Applies `labeller` to an attribute of the item (fastai's `using_attr`), e.g. `usingAttr(re, \.name)`.
public func usingAttr(_ labeller: RegexLabeller, _ attr: KeyPath<Path, String>) -> (Path) throws -> String {
    { try labeller($0[keyPath: attr]) }
}

/// Applies `f` to an attribute of the item.
public func usingAttr<L>(_ f: @escaping (String) throws -> L, _ attr: KeyPath<Path, String>) -> (Path) throws -> L {
    { try f($0[keyPath: attr]) }
}
