#!/usr/bin/env python3
"""End-to-end check of `swiftai serve` (run by `make test`; standard library only).

Starts the server on a free port with an export bundle, then: good and bad requests get their status codes
(200 / 400 / 413 / 415) and the server keeps serving; a stalled client is cut off by the idle timeout while
others are served; 8 concurrent clients are batched; and a real browser (headless Chromium, driven over the
DevTools protocol) uploads a file through the page and the predicted label is read back from the page.

usage: serve_check.py SWIFTAI MODEL IMAGE
"""
import base64, http.client, json, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time, zlib

swiftai, model, image = sys.argv[1:4]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def png(width, height, pixels=None):
    """A grayscale PNG; `pixels=None` writes a header claiming the size with a tiny (invalid) body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + bytes(pixels[r * width:(r + 1) * width]) for r in range(height)) if pixels else b"\0"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def request(method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


server = subprocess.Popen([swiftai, "serve", model, "--port", "0", "--idle-timeout", "2", "--max-upload-mb", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
port = None
deadline = time.time() + 60
while port is None and time.time() < deadline:
    line = server.stdout.readline()
    if line.startswith("{") and '"url"' in line:
        port = int(json.loads(line)["url"].rstrip("/").rsplit(":", 1)[1])
threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # keep draining the log
if port is None:
    server.kill()
    sys.exit("serve_check: the server did not start")
try:
    expected = json.loads(subprocess.run([swiftai, "predict", model, image], capture_output=True, text=True, check=True)
                          .stdout.strip().splitlines()[-1])["label"]
    status, body = request("GET", "/health")
    check(status == 200 and json.loads(body)["status"] == "ok", "GET /health")
    status, body = request("GET", "/")
    check(status == 200 and b'type="file"' in body and b"<script src" not in body, "GET / is the self-contained page")
    photo = open(image, "rb").read()
    status, body = request("POST", "/predict", photo, {"Content-Type": "image/png"})
    answer = json.loads(body)
    check(status == 200 and answer["label"] == expected and abs(sum(answer["probs"].values()) - 1) < 1e-3,
          f"POST /predict raw body -> {answer.get('label')} (swiftai predict: {expected})")
    b = "swiftaiBoundary42"
    form = (f"--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{b}\r\nContent-Disposition: form-data; "
            f"name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + photo + f"\r\n--{b}--\r\n".encode()
    status, body = request("POST", "/predict", form, {"Content-Type": f"multipart/form-data; boundary={b}"})
    check(status == 200 and json.loads(body)["label"] == expected, "POST /predict multipart")
    cases = [("empty body", b"", {}, 400), ("text file", b"hello, not an image", {}, 415),
             ("truncated PNG", photo[: len(photo) // 2], {}, 415),
             ("malformed multipart", b"--x\r\nno headers end", {"Content-Type": "multipart/form-data; boundary=x"}, 400),
             ("upload over the limit", b"\0" * (2 << 20), {}, 413),
             ("30000x30000 image", png(30000, 30000), {}, 413)]
    for what, data, headers, want in cases:
        status, body = request("POST", "/predict", data, headers)
        check(status == want and "error" in json.loads(body), f"{what} -> {status} (want {want}): {body[:90]!r}")
    status, body = request("POST", "/predict", png(1, 1, [200]), {"Content-Type": "image/png"})
    check(status == 200 and "label" in json.loads(body), f"1-pixel image -> {status}")

    # A slow client stalls mid-request; others are served meanwhile and the stalled connection is closed.
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + photo[:100])
    status, _ = request("POST", "/predict", photo)
    check(status == 200, "served while a client stalls")
    slow.settimeout(10)
    try:
        closed = slow.recv(4096) is not None
    except socket.timeout:
        closed = False
    check(closed, "stalled connection closed by the idle timeout")
    slow.close()

    # 8 concurrent clients: all answered, and batched (fewer model calls than images).
    before = json.loads(request("GET", "/health")[1])
    statuses = []
    def client():
        for _ in range(6):
            statuses.append(request("POST", "/predict", photo)[0])
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    after = json.loads(request("GET", "/health")[1])
    calls, images = after["batches"] - before["batches"], after["images"] - before["images"]
    check(statuses == [200] * 48 and images == 48, f"8 concurrent clients: {statuses.count(200)}/48 answered")
    check(calls < images, f"concurrent requests batched: {images} images in {calls} model calls")

    # A real browser uploads a file through the page.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    check(chromium is not None, "headless Chromium installed (make setup)")
    if chromium:
        profile = tempfile.mkdtemp()
        browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                                    f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ws_url = None
            for line in browser.stderr:
                if "DevTools listening on" in line:
                    ws_url = line.split("on ", 1)[1].strip()
                    break
            debug_port = int(ws_url.split(":")[2].split("/")[0])
            conn = http.client.HTTPConnection("127.0.0.1", debug_port, timeout=10)
            conn.request("GET", "/json/list")
            page = next(t for t in json.loads(conn.getresponse().read()) if t["type"] == "page")

            class DevTools:
                """A minimal WebSocket client (RFC 6455 text frames) for the DevTools protocol."""
                def __init__(self, url):
                    host, path = url[len("ws://"):].split("/", 1)
                    self.sock = socket.create_connection((host.split(":")[0], int(host.split(":")[1])), timeout=20)
                    key = base64.b64encode(os.urandom(16)).decode()
                    self.sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
                    response = b""
                    while b"\r\n\r\n" not in response:
                        response += self.sock.recv(4096)
                    self.buffer = response.split(b"\r\n\r\n", 1)[1]
                    self.next_id = 0

                def read(self, n):
                    while len(self.buffer) < n:
                        self.buffer += self.sock.recv(65536)
                    data, self.buffer = self.buffer[:n], self.buffer[n:]
                    return data

                def call(self, method, **params):
                    self.next_id += 1
                    payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
                    mask = os.urandom(4)
                    header = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126 else
                                              bytes([0x80 | 126]) + struct.pack(">H", len(payload)))
                    self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                    while True:
                        first, second = self.read(2)
                        n = second & 0x7F
                        n = struct.unpack(">H", self.read(2))[0] if n == 126 else struct.unpack(">Q", self.read(8))[0] if n == 127 else n
                        message = json.loads(self.read(n))
                        if message.get("id") == self.next_id:
                            return message.get("result", {})

            dt = DevTools(page["webSocketDebuggerUrl"])
            dt.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            for _ in range(50):
                if dt.call("Runtime.evaluate", expression="document.readyState")["result"]["value"] == "complete":
                    break
                time.sleep(0.1)
            root = dt.call("DOM.getDocument")["root"]["nodeId"]
            node = dt.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
            dt.call("DOM.setFileInputFiles", nodeId=node, files=[os.path.abspath(image)])
            shown = None
            for _ in range(100):
                shown = dt.call("Runtime.evaluate", expression="(document.querySelector('.result .label') || {}).textContent || ''")["result"]["value"]
                if shown:
                    break
                time.sleep(0.1)
            check(shown == expected, f"Chromium uploads {os.path.basename(image)} through the page and shows '{shown}'")
        finally:
            browser.kill()
            shutil.rmtree(profile, ignore_errors=True)
    status, _ = request("GET", "/health")
    check(status == 200 and server.poll() is None, "server still serving after everything")
finally:
    server.kill()
print(f"serve_check: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
