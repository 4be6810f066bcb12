import SwiftAICore

/// A module that draws random numbers while it trains (dropout): a checkpoint saves its generator's state, so that
/// a resumed run draws what the uninterrupted one would. User-written modules conform to get the same.
public protocol RandomDrawing: AnyObject {
    var generator: Generator { get }
}

extension Dropout: RandomDrawing {}
extension Dropout2d: RandomDrawing {}

extension Module {
    /// The distinct generators of this model's ``RandomDrawing`` modules, in module order.
    public func generators() -> [Generator] {
        var seen = Set<ObjectIdentifier>()
        return modules().compactMap { ($0 as? RandomDrawing)?.generator }.filter {
            seen.insert(ObjectIdentifier($0)).inserted
        }
    }
}
