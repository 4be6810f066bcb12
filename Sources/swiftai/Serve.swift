import ArgumentParser
import Foundation
import Hummingbird
import NIOCore
import SwiftAICore
import SwiftAIDeploy
import SwiftAILearner
import SwiftAIVision

/// `swiftai serve MODEL`: fastbook's upload-and-classify app over HTTP (Hummingbird).
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve an export bundle over HTTP: GET / (a page to drop images on), POST /predict (an image as raw body or multipart), GET /health.",
        discussion: "Concurrent requests are batched through the model (up to --max-batch). Answers: 200 {\"label\":…,\"probs\":{…}}; 400 empty or malformed body; 413 upload over --max-upload-mb or image over --max-pixels; 415 not a JPEG/PNG (with the decoder's reason).")
    @Argument(help: "Export bundle.") var model: String
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port; the chosen one is printed).") var port = 8080
    @Option(help: "Largest upload, in MB.") var maxUploadMb = 20.0
    @Option(help: "Largest image, in pixels.") var maxPixels = 40_000_000
    @Option(help: "Most images per model call (1 = one by one; on 2 cores larger batches add latency, not throughput: BENCHMARKS.md).") var maxBatch = 4
    @Option(help: "Seconds before an idle or stalled connection is closed.") var idleTimeout = 30
    @Option(help: "Threads (default: all cores, or SWIFTAI_NUM_THREADS).") var threads: Int?

    func validate() throws {
        guard maxUploadMb > 0, maxPixels > 0, maxBatch >= 1, idleTimeout >= 1, (0...65535).contains(port) else {
            throw ValidationError("--max-upload-mb, --max-pixels, --max-batch and --idle-timeout must be positive, --port 0…65535")
        }
    }

    func run() throws {
        if let threads { Parallel.threadCount = threads }
        let predictor: BatchPredictor
        do { predictor = try BatchPredictor(learn: loadLearner(model), maxBatch: maxBatch) } catch { throw fail(error) }
        let limits = UploadLimits(bytes: Int(maxUploadMb * 1_048_576), pixels: maxPixels)
        let router = Router()
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: classifierPage)))
        }
        router.get("/health") { _, _ in
            json(.ok, ["status": "ok", "model": model, "classes": predictor.vocab.count, "batches": predictor.stats.batches,
                       "images": predictor.stats.images])
        }
        router.post("/predict") { request, _ in await predictResponse(request, predictor, limits) }
        let app = Application(router: router, server: .http1(configuration: .init(idleTimeout: .seconds(Int64(idleTimeout)))),
                              configuration: .init(address: .hostname(host, port: port), serverName: "swiftai"),
                              onServerRunning: { channel in
                                  print(jsonLine(["serving": model, "url": "http://\(host):\(channel.localAddress?.port ?? port)/"]))
                                  fflush(stdout)
                              })
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: Error?
        Task {
            do { try await app.runService() } catch { failure = error }
            done.signal()
        }
        done.wait()
        if let failure { throw fail(failure) }
    }
}

struct UploadLimits: Sendable {
    let bytes: Int, pixels: Int
}

/// One `POST /predict`: body (raw or the first file of a multipart form) → image → batched prediction.
private func predictResponse(_ request: Request, _ predictor: BatchPredictor, _ limits: UploadLimits) async -> Response {
    var body: ByteBuffer
    do { body = try await request.body.collect(upTo: limits.bytes) } catch is NIOTooManyBytesError {
        return json(.contentTooLarge, ["error": "upload over the limit of \(limits.bytes) bytes (--max-upload-mb)"])
    } catch {
        return json(.badRequest, ["error": "could not read the request body: \(error)"])
    }
    var bytes = body.readBytes(length: body.readableBytes) ?? []
    if let type = request.headers[.contentType], type.lowercased().hasPrefix("multipart/form-data") {
        switch Multipart.firstFile(bytes, contentType: type) {
        case let .success(part): bytes = part
        case let .failure(e): return json(.badRequest, ["error": e.reason])
        }
    }
    guard !bytes.isEmpty else { return json(.badRequest, ["error": "empty body: send an image (raw bytes or multipart/form-data)"]) }
    do {
        let probs = try await predictor.predict(bytes, maxPixels: limits.pixels)
        let best = probs.indices.max { probs[$0] < probs[$1] }!
        let order = probs.indices.sorted { probs[$0] > probs[$1] }
        let dict = "{" + order.map { "\"\(jsonEscaped(predictor.vocab[$0]))\":\(String(format: "%.6f", probs[$0]))" }.joined(separator: ",") + "}"
        let text = "{\"label\":\"\(jsonEscaped(predictor.vocab[best]))\",\"probs\":\(dict)}"
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    } catch let e as ImageError {
        if case .tooLarge = e { return json(.contentTooLarge, ["error": "\(e)"]) }
        return json(.unsupportedMediaType, ["error": "\(e)"])
    } catch {
        return json(.unprocessableContent, ["error": "\(error)"])
    }
}

private func json(_ status: HTTPResponse.Status, _ pairs: KeyValuePairs<String, Any>) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: jsonLine(pairs))))
}

/// Decodes uploads and runs the model on one thread, batching the requests that arrive while it is busy (up to
/// `maxBatch`). All computation happens there, on the OpenMP team — decoding on the server's event loops would
/// compete with the model's threads for the cores and stall them at every barrier.
final class BatchPredictor: @unchecked Sendable {
    let vocab: [String]
    let mode: ImageMode
    private let learn: Learner
    private let pipeline: InferencePipeline
    private let fixedSize: Bool
    private let maxBatch: Int
    private let cond = NSCondition()
    private var queue: [(bytes: [UInt8], maxPixels: Int, done: CheckedContinuation<[Double], Error>)] = []
    private(set) var stats = (batches: 0, images: 0)

    init(learn: Learner, maxBatch: Int) throws {
        self.learn = learn
        let p = try InferencePipeline(learn.dls)
        pipeline = p
        vocab = p.vocab
        mode = p.mode
        self.maxBatch = maxBatch
        fixedSize = p.inputSize != nil  // images batch together only when the pipeline gives them all one size
        learn.model.eval()
        let worker = Thread { [unowned self] in self.loop() }
        worker.stackSize = 8 << 20
        worker.start()
    }

    /// Class probabilities of the image file in `bytes`; throws the decoder's ``ImageError``.
    func predict(_ bytes: [UInt8], maxPixels: Int) async throws -> [Double] {
        try await withCheckedThrowingContinuation { c in
            cond.lock()
            queue.append((bytes, maxPixels, c))
            cond.signal()
            cond.unlock()
        }
    }

    private func loop() {
        while true {
            cond.lock()
            while queue.isEmpty { cond.wait() }
            let take = fixedSize ? min(maxBatch, queue.count) : 1
            let jobs = Array(queue.prefix(take))
            queue.removeFirst(take)
            cond.unlock()
            // Decode and item-transform the uploads in parallel, then one model call for those that decoded.
            var prepared = [Result<Image, Error>](repeating: .failure(CancellationError()), count: jobs.count)
            prepared.withUnsafeMutableBufferPointer { out in
                Parallel.forEachChunk(jobs.count, grain: 1) { range in
                    for i in range {
                        out[i] = Result { pipeline.prepare(try Image.decode(jobs[i].bytes, path: "upload", mode: mode, maxPixels: jobs[i].maxPixels)) }
                    }
                }
            }
            let ok = prepared.indices.compactMap { i -> (Int, Image)? in (try? prepared[i].get()).map { (i, $0) } }
            var probs: Tensor?
            var failure: Error?
            if !ok.isEmpty {
                do {
                    let x = try pipeline.batch(prepared: ok.map(\.1))
                    probs = noGrad { learn.lossFunc.activation(learn.model(x)) }
                    stats = (stats.batches + 1, stats.images + ok.count)
                } catch { failure = error }
            }
            var row = 0
            for (i, job) in jobs.enumerated() {
                switch prepared[i] {
                case let .failure(e): job.done.resume(throwing: e)
                case .success:
                    if let probs { job.done.resume(returning: probs[row].doubles) } else { job.done.resume(throwing: failure!) }
                    row += 1
                }
            }
        }
    }
}

/// The first file part of a `multipart/form-data` body (RFC 7578), without copying more than it.
enum Multipart {
    struct Malformed: Error { let reason: String }

    static func firstFile(_ body: [UInt8], contentType: String) -> Result<[UInt8], Malformed> {
        guard let b = contentType.split(separator: ";").lazy.map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { $0.lowercased().hasPrefix("boundary=") }) else {
            return .failure(Malformed(reason: "malformed multipart: no boundary in the Content-Type"))
        }
        let boundary = String(b.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        guard !boundary.isEmpty, boundary.utf8.count <= 200 else { return .failure(Malformed(reason: "malformed multipart: bad boundary")) }
        let delimiter = Array("--\(boundary)".utf8), crlf2: [UInt8] = [13, 10, 13, 10]
        var parts: [[UInt8]] = []
        var i = find(delimiter, in: body, from: 0)
        while let start = i {
            let afterDelimiter = start + delimiter.count
            if body.count >= afterDelimiter + 2, body[afterDelimiter] == 45, body[afterDelimiter + 1] == 45 { break }  // "--": the end
            guard let headersEnd = find(crlf2, in: body, from: afterDelimiter) else { break }
            let next = find([13, 10] + delimiter, in: body, from: headersEnd + 4)
            guard let end = next else { return .failure(Malformed(reason: "malformed multipart: a part has no closing boundary")) }
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
