"""Send one oversized request body to a web process and report its memory before and after.

python -m tests.body_flood --port 8000 --pid <daphne pid> --mb 300 [--chunked]
"""

from __future__ import annotations

import argparse
import select
import socket
import time
from pathlib import Path

BLOCK = b"x" * 65536


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def send_big_body(
    port: int, *, total: int, chunked: bool, path: str = "/api/orders"
) -> tuple[int | None, int]:
    """POST ``total`` bytes (declared or chunked); returns (status or None, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n\r\n"
        % (path.encode(), framing)
    )
    sent = 0
    answer = b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server answered (or closed): stop sending
            piece = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK
            sock.sendall(piece)
            sent += len(BLOCK)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed while we were still sending
    deadline = time.monotonic() + 60
    try:
        while b"\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    sock.close()
    status = None
    if answer.startswith(b"HTTP/1."):
        status = int(answer.split(b" ", 2)[1])
    return status, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the web process (daphne)")
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--chunked", action="store_true")
    args = parser.parse_args()
    before = rss_kib(args.pid)
    status, sent = send_big_body(args.port, total=args.mb * 2**20, chunked=args.chunked)
    time.sleep(1)  # let the server finish whatever it does with the request
    after = rss_kib(args.pid)
    print(
        f"status {status}, sent {sent / 2**20:.1f} MiB of {args.mb} MiB, "
        f"VmRSS {before / 1024:.1f} -> {after / 1024:.1f} MiB (+{(after - before) / 1024:.1f})"
    )


if __name__ == "__main__":
    main()
