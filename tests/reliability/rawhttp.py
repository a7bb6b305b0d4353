"""HTTP/1.1 over a plain socket, for what httpx will not do: keep sending while watching for an early answer."""

from __future__ import annotations

import json
import select
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

CHUNK = 64 << 10


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    bytes_sent: int  # body bytes the client had sent when the answer arrived

    def json(self) -> dict:
        return json.loads(self.body)


def stream_until_answered(url: str, path: str, headers: dict[str, str], first: bytes, cap: int) -> RawAnswer:
    """POST `first` then zeros in chunked encoding, forever, until the server answers (or `cap` bytes went out).

    The body has no end, so an answer can only come from a server that judged it while it streamed.
    """
    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", "Transfer-Encoding: chunked"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent, payload = 0, first
        while sent < cap:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed; the answer is in our receive buffer
            sent += len(payload)
            payload = bytes(CHUNK)
        return RawAnswer(*_read_answer(sock), bytes_sent=sent)


def send_head_only(url: str, path: str, headers: dict[str, str]) -> RawAnswer:
    """Send a request's head (declaring any Content-Length) and no body; read what the server says."""
    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return RawAnswer(*_read_answer(sock), bytes_sent=0)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += _recv(sock)
    return int(status_line.split()[1]), headers, body[:length]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 16)
    if not data:
        raise ConnectionError("the server closed the connection before answering")
    return data


class HeldRequest:
    """A POST whose body is sent only in part: the server has the request and waits for the rest of it.

    It stays in flight, deterministically, until `finish` sends the rest (or `close` drops it).
    `source` picks the client's address (any 127.x.y.z reaches a server on 127.0.0.1).
    """

    def __init__(self, url: str, path: str, headers: dict[str, str], body: bytes, sent: int, source: str = "") -> None:
        where = urlparse(url)
        self.sock = socket.create_connection((where.hostname, where.port), timeout=60, source_address=(source, 0))
        self.rest = body[sent:]
        lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:sent])

    def finish(self) -> RawAnswer:
        with self.sock:
            self.sock.sendall(self.rest)
            return RawAnswer(*_read_answer(self.sock), bytes_sent=len(self.rest))

    def close(self) -> None:
        self.sock.close()


def multipart_body(parts: dict[str, bytes], boundary: str) -> bytes:
    """A multipart/form-data body with one file part per entry, named as the file."""
    body = b""
    for name, data in parts.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n\r\n'
        body += head.encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()
