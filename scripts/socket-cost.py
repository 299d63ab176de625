#!/usr/bin/env python3
"""Times `rooms` and `history` through a pgchat socket, as a member of one room.

Used by scripts/history-cost after it seeded its rooms: the median of 21 round trips
(after one warm-up) of each request, from sending the frame to reading its reply.
Python's standard library only: a minimal RFC 6455 client (masked text frames out,
unmasked frames in; pings answered).

    socket-cost.py HOST PORT TOKEN ROOM
"""

import base64
import json
import os
import socket
import statistics
import struct
import sys
import time

RUNS = 21


class Socket:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("the server closed during the upgrade")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n")[0]
        if b" 101 " not in status:
            raise SystemExit(f"upgrade refused: {status.decode(errors='replace')}")

    def _send(self, opcode, data):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def send(self, obj):
        self._send(0x1, json.dumps(obj).encode())

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed the socket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next text message (continuation frames joined); pings answered."""
        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._exact(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._exact(8))
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0x8:
                raise SystemExit(f"closed by the server: {payload!r}")
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def request(self, obj):
        self.send(obj)
        while True:
            reply = self.recv()
            if reply.get("ref") == obj["ref"]:
                return reply


def median_ms(ws, make):
    times = []
    for i in range(RUNS + 1):
        frame = make(i)
        started = time.perf_counter()
        reply = ws.request(frame)
        elapsed = (time.perf_counter() - started) * 1000
        if reply.get("type") == "error":
            raise SystemExit(f"{frame['type']} refused: {reply}")
        if i > 0:
            times.append(elapsed)
    return statistics.median(times)


def main():
    host, port, token, room = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ws = Socket(host, port)
    auth = ws.request({"type": "auth", "token": token, "ref": "auth"})
    if auth.get("type") != "authenticated":
        raise SystemExit(f"auth refused: {auth}")
    rooms = median_ms(ws, lambda i: {"type": "rooms", "ref": f"r{i}"})
    history = median_ms(ws, lambda i: {"type": "history", "roomId": room, "ref": f"h{i}"})
    print(f"{rooms:.2f} {history:.2f}")


if __name__ == "__main__":
    main()
