"""A TCP proxy on 127.0.0.1 in front of a real server, for fault injection only.

Modes: "up" forwards bytes both ways; "reset" accepts and closes at once (the peer sees a reset
or an empty reply), as a server that is down or a broken network would. Bounded: it serves
until stop(), each connection in its own daemon thread.
"""
import socket
import threading


def pipe(a, b):
    """Copies bytes from socket a to socket b until either side closes, then shuts both down."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FaultProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.mode = "up"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                continue
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, client):
        """Serves one accepted connection (subclasses may inspect what passes)."""
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return

        threading.Thread(target=pipe, args=(server, client), daemon=True).start()
        pipe(client, server)

    def stop(self):
        self._stop.set()
        self.sock.close()
