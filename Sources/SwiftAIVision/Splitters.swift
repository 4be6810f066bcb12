import Foundation
import SwiftAICore

/// Splits items into training and validation indices (fastai's splitters).
public protocol Splitter: CustomStringConvertible {
    func split(_ items: [Path]) throws -> (train: [Int], valid: [Int])
}

extension Splitter {
    public var description: String { String(describing: type(of: self)) }
}

/// A random `validPct` of the items for validation; the same `seed` gives the same split.
public struct RandomSplitter: Splitter {
    public let validPct: Double
    public let seed: UInt64?
    public init(validPct: Double = 0.2, seed: UInt64? = nil) {
        self.validPct = validPct
        self.seed = seed
    }

    public func split(_ items: [Path]) throws -> (train: [Int], valid: [Int]) {
        guard validPct >= 0 && validPct < 1 else {
            throw DataBlockError.invalid("validPct must be in [0, 1), got \(validPct)")
        }
        let g = seed.map { Generator(seed: $0) } ?? Generator(seed: UInt64.random(in: 0...UInt64.max))
        let perm = g.permutation(items.count)
        let cut = Int(validPct * Double(items.count))
        return (Array(perm[cut...]), Array(perm[..<cut]))
    }

    public var description: String { "RandomSplitter(validPct: \(validPct), seed: \(seed.map(String.init) ?? "nil"))" }
}

/// Items whose grandparent folder is `train` or `valid` (fastai's `GrandparentSplitter`).
public struct GrandparentSplitter: Splitter {
    public let train: String, valid: String
    public init(train: String = "train", valid: String = "valid") {
        self.train = train
        self.valid = valid
    }

    public func split(_ items: [Path]) throws -> (train: [Int], valid: [Int]) {
        let gp = items.map { $0.parent.parent.name }
        return (gp.indices.filter { gp[$0] == train }, gp.indices.filter { gp[$0] == valid })
    }

    public var description: String { "GrandparentSplitter(train: \(train), valid: \(valid))" }
}

/// Items for which `isValid` is true go to validation (fastai's `FuncSplitter`).
public struct FuncSplitter: Splitter {
    let isValid: (Path) -> Bool
    public init(_ isValid: @escaping (Path) -> Bool) { self.isValid = isValid }
    public func split(_ items: [Path]) throws -> (train: [Int], valid: [Int]) {
        (items.indices.filter { !isValid(items[$0]) }, items.indices.filter { isValid(items[$0]) })
    }
}

/// The items at `validIndices` go to validation (fastai's `IndexSplitter`).
public struct IndexSplitter: Splitter {
    public let validIndices: [Int]
    public init(_ validIndices: [Int]) { self.validIndices = validIndices }
    public func split(_ items: [Path]) throws -> (train: [Int], valid: [Int]) {
        let v = Set(validIndices)
        if let bad = v.first(where: { $0 < 0 || $0 >= items.count }) {
            throw DataBlockError.invalid("IndexSplitter: index \(bad) is outside the \(items.count) items")
        }
        return (items.indices.filter { !v.contains($0) }, items.indices.filter { v.contains($0) })
    }
}

/// Items whose file name is listed (one per line) in `file` go to validation (fastai's `FileSplitter`).
public struct FileSplitter: Splitter {
    public let file: Path
    public init(_ file: Path) { self.file = file }
    public func split(_ items: [Path]) throws -> (train: [Int], valid: [Int]) {
        guard let text = try? String(contentsOfFile: file.string, encoding: .utf8) else {
            throw DataBlockError.invalid("FileSplitter: cannot read \(file) (one validation file name per line)")
        }
        let names = Set(text.split(whereSeparator: \.isNewline).map(String.init))
        return (
            items.indices.filter { !names.contains(items[$0].name) },
            items.indices.filter { names.contains(items[$0].name) }
        )
    }
    public var description: String { "FileSplitter(\(file))" }
}
