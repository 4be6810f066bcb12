import ArgumentParser
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

extension BenchCommand {
    /// `swiftai bench serve`: a load test of `swiftai serve` on loopback.
    struct ServeLoad: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: """
                Load test: starts `swiftai serve MODEL` on a free loopback port, then N clients POST an image over \
                keep-alive connections; one JSON line with p50/p99 latency, requests/s and errors.
                """)
        @OptionGroup var bundle: BundleArgument
        @Option(help: "Image each request uploads.") var image: String
        @Option(help: "Concurrent clients.") var clients = 8
        @Option(help: "Requests in all (after one warm-up request per client).") var requests = 400
        @Option(help: "The server's --max-batch (1 = one by one).") var maxBatch = 16

        func run() throws {
            let body = try Data(contentsOf: URL(fileURLWithPath: image))
            let server = Process()
            server.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
            server.arguments = ["serve", bundle.model, "--port", "0", "--max-batch", String(maxBatch)]
            let out = Pipe()
            server.standardOutput = out
            server.standardError = FileHandle.nullDevice
            try server.run()
            defer { server.terminate() }
            var port: UInt16?
            var pending = ""
            while port == nil {
                let chunk = out.fileHandleForReading.availableData
                guard !chunk.isEmpty else { throw ValidationError("the server exited before listening") }
                pending += String(decoding: chunk, as: UTF8.self)
                if let line = pending.split(separator: "\n").first(where: { $0.contains("\"url\"") }),
                    let p = line.split(separator: ":").last?.filter(\.isNumber)
                {
                    port = UInt16(p)
                }
            }
            let head =
                "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                + "Content-Length: \(body.count)\r\n\r\n"
            let request = Array(head.utf8) + Array(body)
            let state = LoadState(requests: requests), serverPort = port!
            let warm = DispatchGroup(), ready = DispatchSemaphore(value: 0), all = DispatchGroup()
            for _ in 0..<clients {
                all.enter()
                warm.enter()
                Thread.detachNewThread {
                    defer { all.leave() }
                    guard let conn = LoopbackConnection(port: serverPort) else {
                        state.record(nil)
                        warm.leave()
                        return
                    }
                    if (try? conn.roundTrip(request)) != 200 { state.record(nil) }
                    warm.leave()
                    ready.wait()
                    while state.claim() {
                        let t0 = DispatchTime.now()
                        let status = try? conn.roundTrip(request)
                        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6
                        state.record(status == 200 ? ms : nil)
                    }
                }
            }
            warm.wait()
            let began = DispatchTime.now()
            for _ in 0..<clients { ready.signal() }
            all.wait()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - began.uptimeNanoseconds) / 1e9
            let (latencies, errors) = state.result
            func pct(_ p: Double) -> Double {
                latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(p * Double(latencies.count)))]
            }
            print(
                jsonLine([
                    "bench": "serve", "model": bundle.model, "clients": clients, "max_batch": maxBatch,
                    "requests": latencies.count,
                    "errors": errors, "p50_ms": Rounded(pct(0.5), 1), "p99_ms": Rounded(pct(0.99), 1),
                    "requests_per_s": Rounded(Double(latencies.count) / seconds, 1)
                ]))
        }
    }
}

/// Requests handed out to the load test's clients, and what came back (thread-safe).
final class LoadState: @unchecked Sendable {
    private let lock = NSLock()
    private let requests: Int
    private var handedOut = 0, errors = 0, latencies: [Double] = []

    init(requests: Int) { self.requests = requests }

    /// Whether the caller may send one more request.
    func claim() -> Bool {
        lock.withLock {
            handedOut += 1; return handedOut <= requests
        }
    }

    /// A latency in ms, or nil for a failed request.
    func record(_ ms: Double?) { lock.withLock { if let ms { latencies.append(ms) } else { errors += 1 } } }

    /// Sorted latencies and the error count.
    var result: ([Double], Int) { lock.withLock { (latencies.sorted(), errors) } }
}

/// One keep-alive HTTP/1.1 connection to 127.0.0.1 (a blocking socket; enough for a load test).
final class LoopbackConnection {
    private let fd: Int32

    init?(port: UInt16) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if ok != 0 { close(fd); return nil }
    }

    deinit { close(fd) }

    struct Failed: Error {}

    /// Sends `request` and reads one response (headers, then `Content-Length` bytes); returns its status.
    func roundTrip(_ request: [UInt8]) throws -> Int {
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failed() }
            sent += n
        }
        var data: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { throw Failed() }
            data += buffer[0..<n]
            guard let end = data.firstRange(of: [13, 10, 13, 10]) else { continue }
            let head = String(decoding: data[..<end.lowerBound], as: UTF8.self)
            let length =
                head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            while data.count < end.upperBound + length {
                let m = recv(fd, &buffer, buffer.count, 0)
                guard m > 0 else { throw Failed() }
                data += buffer[0..<m]
            }
            guard let status = Int(head.split(separator: " ").dropFirst().first ?? "") else { throw Failed() }
            return status
        }
    }
}
