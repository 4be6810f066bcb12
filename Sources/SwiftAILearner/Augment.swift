import SwiftAICore

/// Applies a random transform to each training batch, drawing from a generator seeded by
/// `(seed, epoch, batch)` so runs are reproducible and independent of what ran before (miniai's `BatchTransformCB`).
public final class BatchTransform: Callback {
    public var order: Int { -5 }
    public let seed: UInt64
    let transform: (Tensor, Generator) -> Tensor

    public init(seed: UInt64 = 0, _ transform: @escaping (Tensor, Generator) -> Tensor) {
        self.seed = seed
        self.transform = transform
    }

    public func beforeBatch(_ learn: Learner) {
        guard learn.training else { return }
        let g = Generator(seed: seed &+ UInt64(learn.epoch) &* 1_000_003 &+ UInt64(learn.iter) &* 7919)
        learn.batch.x = transform(learn.batch.x, g)
    }

    /// The reference script's augmentation: pad by 1, crop back to the original size at a random offset, and
    /// flip horizontally with probability 0.5 — one draw for the whole batch.
    public static func cropAndFlip(seed: UInt64 = 0, padding: Int = 1) -> BatchTransform {
        BatchTransform(seed: seed) { x, g in
            let h = x.shape[2], w = x.shape[3]
            let padded = x.pad([padding, padding, padding, padding])
            let i = g.nextInt(in: 0..<(2 * padding + 1)), j = g.nextInt(in: 0..<(2 * padding + 1))
            var out = padded[.all, .all, i..<(i + h), j..<(j + w)].contiguous()
            if g.nextDouble() < 0.5 { out = out.flip(dim: 3) }
            return out
        }
    }
}
