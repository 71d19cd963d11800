"""An HTTP-aware fault proxy in front of the real S3 server (fault injection only).

It reads each request on a kept-alive client connection and, per request, either forwards it
(over its own upstream connection) or injects one fault, chosen at random at the rates the test
sets, and counts what it injected:
  "500"       answers 500 InternalError itself (the server never sees the request);
  "503"       answers 503 SlowDown;
  "reset"     forwards, then sends half the answer (half the body, or half the head when it has
              none) and resets the connection;
  "truncate"  the same, closing cleanly instead: a short body or a cut-off head;
With `blackhole` set, requests are read and never answered, and new connections are accepted
and left hanging, until it is cleared (the client's own timeouts must fire).
"""
import random
import socket
import threading
import time

from faultproxy import FaultProxy

ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
              '<RequestId>fault-proxy</RequestId></Error>')


def read_head(sock, buf):
    """(head bytes, rest) once a full HTTP head arrived, or (None, buf) at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, buf
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def _read_n(sock, buf, n):
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed mid-body")
        buf += data
    return buf[:n], buf[n:]


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode()
    return None


def _read_body(sock, head, buf, no_body):
    """The body that follows `head` (Content-Length or chunked), and what was read past it."""
    if no_body:
        return b"", buf
    te = (header(head, b"transfer-encoding") or "").lower()
    if te == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536) or b""
            line, _, buf = buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            chunk, buf = _read_n(sock, buf, size + 2)
            body += line + b"\r\n" + chunk
            if size == 0:
                return body, buf
    return _read_n(sock, buf, int(header(head, b"content-length") or 0))


class HttpFaultProxy(FaultProxy):
    def __init__(self, target_port, seed=0):
        self.rates = {}  # fault -> probability per request
        self.injected = {k: 0 for k in ("500", "503", "reset", "truncate", "blackholed")}
        self.forwarded = 0
        self.blackhole = False
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        super().__init__(target_port)

    def _choose(self):
        with self._lock:
            r, acc = self._rng.random(), 0.0
            for fault, p in self.rates.items():
                acc += p
                if r < acc:
                    return fault
            return None

    def _count(self, fault):
        with self._lock:
            self.injected[fault] += 1

    def _hold(self, sock):
        """Answers nothing while the blackhole lasts, then drops the connection."""
        self._count("blackholed")
        while self.blackhole and not self._stop.is_set():
            time.sleep(0.1)
        sock.close()

    def _forward(self, client):
        upstream, cbuf, ubuf = None, b"", b""
        try:
            while True:
                if self.blackhole:
                    return self._hold(client)
                head, cbuf = read_head(client, cbuf)
                if head is None:
                    return
                body, cbuf = _read_body(client, head, cbuf, False)
                if self.blackhole:
                    return self._hold(client)
                fault = self._choose()
                if fault in ("500", "503"):
                    self._count(fault)
                    code, msg = ("InternalError", "injected") if fault == "500" else ("SlowDown", "Reduce your request rate.")
                    payload = ERROR_BODY.format(code=code, msg=msg).encode()
                    status = "500 Internal Server Error" if fault == "500" else "503 Slow Down"
                    client.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                                   f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=30)
                upstream.sendall(head + body)
                rhead, ubuf = read_head(upstream, ubuf)
                if rhead is None:
                    return
                status = int(rhead.split(b" ", 2)[1])
                no_body = head.startswith(b"HEAD ") or status in (204, 304)
                rbody, ubuf = _read_body(upstream, rhead, ubuf, no_body)
                if fault in ("reset", "truncate"):
                    # Half the answer: half its body, or (with none, as a PUT's) half its head.
                    # The server did the work; the client can't know it did.
                    self._count(fault)
                    whole = rhead + rbody
                    client.sendall(whole[: len(rhead) + len(rbody) // 2] if rbody else rhead[: len(rhead) // 2])
                    if fault == "reset":
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    client.close()
                    return
                with self._lock:
                    self.forwarded += 1
                client.sendall(rhead + rbody)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
