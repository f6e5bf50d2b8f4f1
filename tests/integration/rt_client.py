#!/usr/bin/env python3
"""rt_client — a minimal WebSocket client (standard library only) for the realtime sink's smoke
test (tests/integration/rt_smoke.sh): it speaks the Realtime protocol's frames as a script tells
it, so that the test does not depend on npm.

  rt_client.py PORT PATH_AND_QUERY [--header 'Name: value'] [--timeout S] [--tls] SCRIPT...

--tls connects with TLS (wss://) without verifying the certificate (tests use a self-signed one).

SCRIPT items, run in order:
  send:TEXT        send TEXT as one text frame
  expect:SUBSTR    read frames until one contains SUBSTR (printing every frame read); fail on timeout
  wait:SECONDS     read and print frames for SECONDS
  sendfile:PATH    send the content of PATH as one text frame
If the handshake is refused, prints 'HTTP STATUS BODY' and exits 3.
Frames read are printed one per line on stdout, prefixed with 'frame '; a close frame prints
'close CODE'.
"""
import base64
import os
import socket
import ssl
import struct
import sys
import time


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def send_frame(s, payload, opcode=1):
    data = payload.encode() if isinstance(payload, str) else payload
    head = bytes([0x80 | opcode])
    n = len(data)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    s.sendall(head + mask + masked)


def read_frame(s):
    b0, b1 = read_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(s, 8))[0]
    data = read_exact(s, n)
    return b0 & 0x0F, data


def main():
    args = sys.argv[1:]
    port, path = int(args[0]), args[1]
    headers, timeout, script, tls = [], 20.0, [], False
    i = 2
    while i < len(args):
        if args[i] == "--tls":
            tls = True; i += 1
        elif args[i] == "--header":
            headers.append(args[i + 1]); i += 2
        elif args[i] == "--timeout":
            timeout = float(args[i + 1]); i += 2
        else:
            script.append(args[i]); i += 1
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    for h in headers:
        req += h + "\r\n"
    s.sendall((req + "\r\n").encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    head, _, rest = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    if status != 101:
        body = rest
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
        except (socket.timeout, OSError):
            pass
        print(f"HTTP {status} {body.decode(errors='replace')}")
        sys.stdout.flush()
        sys.exit(3)
    pending = rest
    if pending:
        s = PrefixSocket(s, pending)
    for item in script:
        kind, _, arg = item.partition(":")
        if kind == "send":
            send_frame(s, arg)
        elif kind == "sendfile":
            with open(arg, "rb") as f:
                send_frame(s, f.read())
        elif kind in ("expect", "wait"):
            deadline = time.time() + (timeout if kind == "expect" else float(arg))
            found = False
            while time.time() < deadline:
                s.settimeout(max(0.05, deadline - time.time()))
                try:
                    op, data = read_frame(s)
                except socket.timeout:
                    break
                except EOFError:
                    print("eof"); sys.stdout.flush()
                    sys.exit(0 if kind == "wait" else 4)
                if op == 8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
                    print(f"close {code}"); sys.stdout.flush()
                    sys.exit(0 if kind == "wait" else 4)
                if op == 9:
                    send_frame(s, data, 10)
                    continue
                text = data.decode(errors="replace")
                print("frame " + text); sys.stdout.flush()
                if kind == "expect" and arg in text:
                    found = True
                    break
            if kind == "expect" and not found:
                print(f"timeout waiting for {arg}"); sys.stdout.flush()
                sys.exit(5)
    s.close()


class PrefixSocket:
    """A socket whose first bytes were already read with the handshake response."""

    def __init__(self, s, prefix):
        self.s, self.prefix = s, prefix

    def recv(self, n):
        if self.prefix:
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            return out
        return self.s.recv(n)

    def sendall(self, b):
        return self.s.sendall(b)

    def settimeout(self, t):
        return self.s.settimeout(t)

    def close(self):
        return self.s.close()


if __name__ == "__main__":
    main()
