import ArgumentParser
import Foundation
import SwiftAICore
import SwiftAIDeploy
import SwiftAINN
import SwiftAIOptim
import SwiftAIData
import SwiftAIVision

/// `swiftai bench …`: kernel and training-step figures, one JSON line each.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: one JSON line per figure.",
        subcommands: [
            Gemm.self, Conv.self, Step.self, Infer.self, Pipeline.self, Decode.self, ServeLoad.self, AllReduce.self,
            DDP.self
        ])

    static func seconds(_ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }

    /// Median of `reps` timings after `warmup` untimed runs.
    static func median(reps: Int, warmup: Int = 2, _ body: () -> Void) -> Double {
        for _ in 0..<warmup { body() }
        let t = (0..<reps).map { _ in seconds(body) }.sorted()
        return t[t.count / 2]
    }

    struct Gemm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Float32 matrix product C = A·B, n×n.")
        @Option(parsing: .upToNextOption, help: "Matrix sizes.") var n: [Int] = [256, 512, 1024, 2048]
        @Option(help: "Timed repetitions.") var reps = 7

        func run() {
            for n in n {
                let a = Tensor.randn([n, n]), b = Tensor.randn([n, n])
                let t = BenchCommand.median(reps: reps) { _ = a.matmul(b) }
                print(jsonLine(["bench": "gemm", "n": n, "gflops": 2 * Double(n * n) * Double(n) / t / 1e9]))
            }
        }
    }

    struct Conv: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: """
                Convolution passes on channels-last activations (the engine's layout), weight reorders included.
                """)
        @Option(help: "Timed repetitions.") var reps = 10

        func run() {
            // (N, C, H, W, OC, k, stride, pad)
            for (n, c, h, oc, k, s, p) in [(1024, 16, 14, 32, 3, 2, 1), (256, 64, 7, 64, 3, 1, 1)] {
                let x = Tensor.randn([n, c, h, h]).contiguous(.channelsLast)
                let w = Tensor.randn([oc, c, k, k]) * 0.1
                let y = x.conv2d(weight: w, stride: s, padding: p)
                let oh = y.shape[2]
                let dy = Tensor.randn(y.shape).contiguous(.channelsLast)
                let flops = 2 * Double(n * oc * oh * oh) * Double(c * k * k)
                let shape = "\(n)x\(c)x\(h)x\(h)->\(oc),k\(k),s\(s),p\(p)"
                let passes: [(String, () -> Void)] = [
                    ("forward", { _ = x.conv2d(weight: w, stride: s, padding: p) }),
                    (
                        "backward_data",
                        {
                            _ = Tensor.conv2dInputGrad(
                                gradOutput: dy, weight: w, inputShape: x.shape, stride: s,
                                padding: p)
                        }
                    ),
                    (
                        "backward_weights",
                        {
                            _ = Tensor.conv2dWeightGrad(
                                input: x, gradOutput: dy, weightShape: w.shape, stride: s,
                                padding: p)
                        }
                    )
                ]
                for (name, body) in passes {
                    let t = BenchCommand.median(reps: reps, body)
                    print(jsonLine(["bench": "conv", "shape": shape, "pass": name, "gflops": flops / t / 1e9]))
                }
            }
        }
    }

    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: """
                One training step: forward + backward of a lesson model on Fashion-MNIST-sized input, or forward + \
                backward + AdamW step of a torchvision ResNet (as fastai_pets.py --train-batches).
                """)
        @Option(name: [.customLong("arch"), .customLong("model")], help: "cnn, resnet, wide or resnet18…resnet152.")
        var arch: Arch = .lesson(.resnet)
        @Option(help: "Batch size (default 1024; 64 for torchvision archs).") var bs: Int?
        @Option(help: "Image size of a torchvision arch.") var size = 224
        @Option(help: "Classes of a torchvision arch.") var nOut = 10
        @Option(help: "Timed repetitions.") var reps = 5
        @Option(help: "fp32 or bf16: the operand type of convolutions and linear layers (as train --precision).")
        var precision: TrainPrecision = .fp32

        func run() throws {
            let net: Module, x: Tensor, y: Tensor, n: Int
            var opt: Optimizer?
            switch arch {
            case let .lesson(m):
                n = bs ?? 1024
                net = m.make(generator: Generator(seed: 0))
                x = Tensor.randn([n, 1, 28, 28])
                y = Tensor.randint(0, 10, [n])
            case let .torchvision(r):
                n = bs ?? 64
                net = r.make(numClasses: nOut, generator: Generator(seed: 0))
                x = Tensor.randn([n, 3, size, size]).contiguous(.channelsLast)
                y = Tensor.randint(0, nOut, [n])
                opt = AdamW.fastai(net, lr: 1e-3)
            }
            let dtype = precision.dtype
            if dtype != .float32, let why = CPUFeatures.lowPrecisionUnavailable(dtype) { throw ValidationError(why) }
            let t = autocast(dtype) {
                BenchCommand.median(reps: reps) {
                    let loss = crossEntropy(net(x), y)
                    loss.backward()
                    opt?.step()
                    for p in net.parameters() { p.grad = nil }
                }
            }
            print(
                jsonLine([
                    "bench": "step", "model": arch.description, "bs": n, "precision": precision.rawValue,
                    "ms": t * 1e3, "images_per_s": Double(n) / t,
                    "peak_rss_mb": Double(peakRSSKiB()) / 1024
                ]))
        }
    }

    struct Infer: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inference of a torchvision ResNet (evaluation mode, no gradients).")
        @Option(help: "resnet18…resnet152.") var arch: ResNetArch = .resnet34
        @Option(help: "Batch size.") var bs = 1
        @Option(help: "Image size.") var size = 224
        @Option(help: "Timed repetitions.") var reps = 7
        @Flag(help: "Run the model fused for inference (BatchNorm folded, ReLU and residual add in the convolutions).")
        var fused = false

        @Option(help: "An export bundle to time instead of --arch (its own input size; fused unless --unfused).")
        var bundle: String?
        @Flag(help: "With --bundle: the trainable model, not the fused one.") var unfused = false

        func run() throws {
            let net: Module, shape: [Int], name: String
            if let bundle {
                let b = try ExportBundle(path: bundle)
                guard let s = b.inputSize else { throw ValidationError("the bundle's input size depends on the image") }
                b.model.eval()
                (net, shape, name) = (unfused ? b.model : b.model.fusedForInference(), s, bundle)
            } else {
                let model = arch.make(generator: Generator(seed: 0))
                model.eval()
                (net, shape, name) = (fused ? model.fusedForInference() : model, [3, size, size], arch.rawValue)
            }
            let x = Tensor.randn([bs] + shape).contiguous(.channelsLast)
            let t = BenchCommand.median(reps: reps) { _ = noGrad { net(x) } }
            print(
                jsonLine([
                    "bench": "infer", "model": name, "bs": bs, "fused": bundle == nil ? fused : !unfused,
                    "ms": Rounded(t * 1e3, 2),
                    "images_per_s": Double(bs) / t
                ]))
        }
    }

    struct Pipeline: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: """
                Training batches of an image folder: decode → Resize(presize) → augTransforms(size, minScale) → \
                Normalize, as fastbook's pets DataBlock.
                """)
        @OptionGroup var opts: ImageFolderOptions
        @Option(help: "Timed batches, after one untimed batch (as the fastai reference script); 0: a whole epoch.")
        var batches = 20

        func run() throws {
            let (_, dls) = try opts.dataloaders()
            let it = dls.train.makeIterator()
            _ = it.next()
            var n = 0, done = 0
            let t = BenchCommand.seconds {
                while batches == 0 || done < batches, let b = it.next() {
                    n += b.x.shape[0]
                    done += 1
                }
            }
            if let e = it.error { throw e }
            print(
                jsonLine([
                    "bench": "pipeline", "images_per_s": n > 0 ? Double(n) / t : 0, "batches": done,
                    "bs": dls.train.batchSize, "workers": dls.train.numWorkers,
                    "peak_rss_mb": Double(peakRSSKiB()) / 1024
                ]))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-image decode time (one thread, full size, RGB) over a folder's images.")
        @Option(help: "Image folder.") var data: String
        @Option(help: "Images to decode (the first N, sorted).") var n = 200

        func run() throws {
            let files = Array(try getImageFiles(Path(data)).prefix(n))
            var decoded = 0
            let t = BenchCommand.seconds { for f in files where (try? Image.read(f.string)) != nil { decoded += 1 } }
            print(
                jsonLine([
                    "bench": "decode", "images": decoded,
                    "ms_per_image": Rounded(t * 1e3 / Double(Swift.max(decoded, 1)), 3)
                ]))
        }
    }
}

/// Peak resident memory of this process (VmHWM), in KiB.
func peakRSSKiB() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}
