"""A counting HTTP/1.1 proxy on 127.0.0.1 in front of the S3 server (moto), for the storage
benchmark: every request on every keep-alive connection is parsed (request line, headers, body
framed by Content-Length or chunked transfer-encoding), forwarded unchanged, and recorded as
(time, kind, body bytes). Responses are piped back untouched (requests are not pipelined by
S3 clients: each waits for its response, and `Expect: 100-continue` works because the response
direction is a plain byte pipe).

Kinds (path-style requests, `/bucket/key?query`):
  PUT            PutObject                   PART     UploadPart (PUT ?partNumber&uploadId)
  COPY           PUT with x-amz-copy-source  MPU      CreateMultipartUpload / Complete (POST)
  GET            GetObject                   LIST     GET on the bucket (list-type, prefix, ...)
  HEAD           HeadObject / HeadBucket     DELETE   DeleteObject (or AbortMultipartUpload)
  DELETEOBJECTS  POST ?delete (a batch; `deleted` counts the <Key>s in its body)
Body bytes are the payload: x-amz-decoded-content-length when the body is aws-chunked, else
Content-Length (or the sum of chunk sizes for Transfer-Encoding: chunked).
"""
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from faultproxy import FaultProxy, pipe  # noqa: E402 (the fault-injection tests' proxy)


class CountProxy(FaultProxy):
    """FaultProxy's listener and byte pump, with every request counted on its way through."""

    def __init__(self, target_port: int):
        self.events = []  # (time.time(), kind, body bytes, deleted keys)
        self.lock = threading.Lock()
        super().__init__(target_port)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _forward(self, client):
        try:
            server = socket.create_connection(self.target, timeout=60)
        except OSError:
            client.close()
            return
        threading.Thread(target=pipe, args=(server, client), daemon=True).start()
        try:
            self._requests(client, server)
        except (OSError, ValueError):
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _requests(self, client, server):
        buf = b""

        def fill():
            nonlocal buf
            data = client.recv(65536)
            if not data:
                raise ValueError("closed")
            buf += data

        def take(n):  # forwards exactly n body bytes, returns them only if small
            nonlocal buf
            keep, small = n, b""
            while n > 0:
                if not buf:
                    fill()
                part, buf = buf[:n], buf[n:]
                server.sendall(part)
                if keep <= 1 << 20:
                    small += part
                n -= len(part)
            return small

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                fill()
            i = buf.index(b"\r\n") + 2
            out, buf = buf[:i], buf[i:]
            server.sendall(out)
            return out

        while True:
            while b"\r\n\r\n" not in buf:
                fill()
            i = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:i], buf[i:]
            server.sendall(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            h = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    h[k.strip().lower()] = v.strip()
            body, nbytes = b"", 0
            if "chunked" in h.get("transfer-encoding", "").lower():
                while True:
                    size = int(line().split(b";")[0].strip(), 16)
                    if size == 0:
                        while line() != b"\r\n":  # trailers, then the blank line
                            pass
                        break
                    body += take(size)
                    nbytes += size
                    take(2)
            else:
                n = int(h.get("content-length", "0") or 0)
                body = take(n)
                nbytes = n
            if "x-amz-decoded-content-length" in h:
                nbytes = int(h["x-amz-decoded-content-length"])
            self._record(method, target, h, nbytes, body)

    def _record(self, method, target, h, nbytes, body):
        u = urlsplit(target)
        q = parse_qs(u.query, keep_blank_values=True)
        parts = [p for p in u.path.split("/") if p]
        deleted = 0
        if method == "PUT":
            kind = "PART" if "partNumber" in q else ("COPY" if "x-amz-copy-source" in h else "PUT")
        elif method == "POST":
            if "delete" in q:
                kind, deleted = "DELETEOBJECTS", body.count(b"<Key>")
            else:
                kind = "MPU"
        elif method == "GET":
            kind = "LIST" if len(parts) <= 1 or "list-type" in q or "prefix" in q else "GET"
        elif method == "DELETE":
            kind, deleted = "DELETE", 1
        else:
            kind = method
        with self.lock:
            self.events.append((time.time(), kind, nbytes, deleted))

    def window(self, t0, t1):
        """{kind: [count, body bytes, deleted keys]} of requests recorded in [t0, t1)."""
        out = {}
        with self.lock:
            evs = list(self.events)
        for t, kind, n, deleted in evs:
            if t0 <= t < t1:
                c = out.setdefault(kind, [0, 0, 0])
                c[0] += 1
                c[1] += n
                c[2] += deleted
        return out

