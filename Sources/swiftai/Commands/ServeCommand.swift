import ArgumentParser
import Foundation
import Hummingbird
import NIOCore
import SwiftAICore
import SwiftAIDeploy
import SwiftAILearner
import SwiftAIVision

/// `swiftai serve MODEL`: fastbook's upload-and-classify app over HTTP (Hummingbird).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: """
            Serve an export bundle over HTTP: GET / (a page to drop images on), POST /predict (an image as raw body or \
            multipart), GET /health.
            """,
        discussion: """
            Concurrent requests are batched through the model (up to --max-batch). Answers: 200 \
            {"label":…,"probs":{…}}; 400 empty or malformed body; 413 upload over --max-upload-mb or image over \
            --max-pixels; 415 not a JPEG/PNG (with the decoder's reason).
            """)
    @OptionGroup var bundle: BundleArgument
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port; the chosen one is printed).") var port = 8080
    @Option(help: "Largest upload, in MB.") var maxUploadMb = 20.0
    @Option(help: "Largest image, in pixels.") var maxPixels = 40_000_000
    @Option(
        help: """
            Most images per model call (1 = one by one; on 2 cores larger batches add latency, not throughput: \
            BENCHMARKS.md).
            """)
    var maxBatch = 4
    @Option(help: "Seconds before an idle or stalled connection is closed.") var idleTimeout = 30
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        guard maxUploadMb > 0, maxPixels > 0, maxBatch >= 1, idleTimeout >= 1, (0...65535).contains(port) else {
            throw ValidationError(
                "--max-upload-mb, --max-pixels, --max-batch and --idle-timeout must be positive, --port 0…65535")
        }
    }

    func run() throws {
        threads.apply()
        let model = bundle.model
        let predictor = try BatchPredictor(learn: bundle.load(), maxBatch: maxBatch)
        let limits = UploadLimits(bytes: Int(maxUploadMb * 1_048_576), pixels: maxPixels)
        let router = Router()
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: classifierPage)))
        }
        router.get("/health") { _, _ in
            json(
                .ok,
                [
                    "status": "ok", "model": model, "classes": predictor.vocab.count,
                    "batches": predictor.stats.batches, "images": predictor.stats.images
                ])
        }
        router.post("/predict") { request, _ in await predictResponse(request, predictor, limits) }
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(idleTimeout)))),
            configuration: .init(address: .hostname(host, port: port), serverName: "swiftai"),
            onServerRunning: { channel in
                let url = "http://\(host):\(channel.localAddress?.port ?? port)/"
                print(jsonLine(["serving": model, "url": url]))
                fflush(stdout)
            })
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: Error?
        Task {
            do { try await app.runService() } catch { failure = error }
            done.signal()
        }
        done.wait()
        if let failure { throw failure }
    }
}

struct UploadLimits: Sendable {
    let bytes: Int, pixels: Int
}

/// One `POST /predict`: body (raw or the first file of a multipart form) → image → batched prediction.
private func predictResponse(
    _ request: Request, _ predictor: BatchPredictor,
    _ limits: UploadLimits
) async -> Response {
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
    guard !bytes.isEmpty else {
        return json(.badRequest, ["error": "empty body: send an image (raw bytes or multipart/form-data)"])
    }
    do {
        let probs = try await predictor.predict(bytes, maxPixels: limits.pixels)
        let best = probs.indices.max { probs[$0] < probs[$1] }!
        let order = probs.indices.sorted { probs[$0] > probs[$1] }
        let dict = order.map { "\"\(jsonEscaped(predictor.vocab[$0]))\":\(String(format: "%.6f", probs[$0]))" }
        let text = "{\"label\":\"\(jsonEscaped(predictor.vocab[best]))\",\"probs\":{\(dict.joined(separator: ","))}}"
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    } catch let e as ImageError {
        if case .tooLarge = e { return json(.contentTooLarge, ["error": "\(e)"]) }
        return json(.unsupportedMediaType, ["error": "\(e)"])
    } catch {
        return json(.unprocessableContent, ["error": "\(error)"])
    }
}

private func json(_ status: HTTPResponse.Status, _ pairs: KeyValuePairs<String, Any>) -> Response {
    Response(
        status: status, headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(string: jsonLine(pairs))))
}
