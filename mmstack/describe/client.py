"""A minimal client of ``POST /describe`` (standard library only): used by the tests and the load benchmark.

Photos are streamed from memory or from files in chunks, so a client can send 10 photos of 25 MB without holding
the whole body.
"""
from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

CHUNK = 1 << 20


def _parts(attributes: dict | str | None, photos: Iterable[tuple[str, bytes | Path]], boundary: str
           ) -> list[bytes | Path]:
    out: list[bytes | Path] = []
    if attributes is not None:
        text = attributes if isinstance(attributes, str) else json.dumps(attributes, ensure_ascii=False)
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="attributes"\r\n\r\n'.encode()
                   + text.encode() + b"\r\n")
    for name, data in photos:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="{name}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return out


def _length(part: bytes | Path) -> int:
    return Path(part).stat().st_size if isinstance(part, Path) else len(part)


def _stream(parts: list[bytes | Path]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, Path):
            with open(part, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
        else:
            for start in range(0, len(part), CHUNK):
                yield part[start:start + CHUNK]


def post_listing(url: str, attributes: dict | str | None = None, photos: Iterable[tuple[str, bytes | Path]] = (),
                 timeout: float = 120.0) -> tuple[int, dict]:
    """POST one listing to ``url`` (``http://host:port/describe``); ``(status, JSON body)``. A server that
    refuses the body early and closes the connection still gives its status when it answered."""
    boundary = uuid.uuid4().hex
    parts = _parts(attributes, list(photos), boundary)
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)
    try:
        conn.putrequest("POST", where.path or "/")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(sum(map(_length, parts))))
        conn.endheaders()
        try:
            for chunk in _stream(parts):
                conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before the whole body was sent (413): read that answer
        response = conn.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except json.JSONDecodeError:
            return response.status, {"raw": body.decode("utf-8", "replace")}
    finally:
        conn.close()
