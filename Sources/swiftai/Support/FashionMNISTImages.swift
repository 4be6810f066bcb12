import Foundation
import SwiftAIData
import SwiftAIVision

/// Fashion-MNIST written as PNG files, the default image folder of the `data` commands.
enum FashionMNISTImages {
    /// Class folder names (FashionMNIST's class names with `/` replaced).
    static let folderNames = FashionMNIST.classes.map { $0.replacingOccurrences(of: "/", with: "_") }

    static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        let cache = env["SWIFTAI_CACHE"] ?? (env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/swiftai"
        return cache + "/fashion-mnist-png"
    }

    /// Writes the folder unless a complete one is there (a marker file is written last; a partial folder is redone).
    static func ensure(at dir: Path) throws {
        if FileManager.default.fileExists(atPath: (dir / ".complete").string) { return }
        FileHandle.standardError.write(Data("writing Fashion-MNIST as PNG files to \(dir) (once)\n".utf8))
        _ = try write(to: dir, from: FashionMNIST())
    }

    /// Writes every image; returns how many. Existing files are overwritten.
    @discardableResult
    static func write(to dir: Path, from ds: FashionMNIST) throws -> Int {
        let fm = FileManager.default
        var total = 0
        let splits = [("train", ds.trainImages, ds.trainLabels), ("test", ds.testImages, ds.testLabels)]
        for (split, images, labels) in splits {
            for name in folderNames {
                try fm.createDirectory(atPath: (dir / split / name).string, withIntermediateDirectories: true)
            }
            let px = images.contiguous().scalars(as: UInt8.self), ys = labels.scalars(as: Int64.self)
            let n = ys.count
            var failure: Error?
            let lock = NSLock()
            DispatchQueue.concurrentPerform(iterations: ProcessInfo.processInfo.activeProcessorCount) { w in
                for i in stride(from: w, to: n, by: ProcessInfo.processInfo.activeProcessorCount) {
                    let img = Image(width: 28, height: 28, channels: 1, pixels: Array(px[(i * 784)..<((i + 1) * 784)]))
                    do { try img.writePNG(to: (dir / split / folderNames[Int(ys[i])] / "\(i).png").string) } catch {
                        lock.lock(); failure = failure ?? error; lock.unlock()
                    }
                }
            }
            if let failure { throw failure }
            total += n
        }
        guard fm.createFile(atPath: (dir / ".complete").string, contents: Data()) else {
            throw ImageError.writeFailed(path: (dir / ".complete").string, reason: "cannot create the marker file")
        }
        return total
    }
}
