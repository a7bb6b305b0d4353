"""The upload body: multipart/form-data built here, so its length is known and progress can be reported."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "adapter_config.json", "adapter_model.safetensors", "card.json"
CHUNK_BYTES = 1 << 16
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart/form-data body; its field name is also its filename, as the server expects."""

    name: str
    source: Path | bytes
    content_type: str = "application/octet-stream"

    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
            return
        with self.source.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk


class MultipartBody:
    """A multipart/form-data body produced chunk by chunk, telling `progress(sent, total)` as each chunk is taken.

    The length is known up front, so it is sent as Content-Length rather than chunked; the last call to
    `progress` has sent == total.
    """

    def __init__(self, parts: list[FilePart], progress: Progress | None = None) -> None:
        self.parts = parts
        self.progress = progress
        self.boundary = secrets.token_hex(16)
        self.total = sum(len(self._head(part)) + part.size() + 2 for part in parts) + len(self._tail())

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}", "Content-Length": str(self.total)}

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        self._report(sent)
        for piece in self._pieces():
            yield piece
            # Reported once httpx asks for the next piece, i.e. after this one was handed to the connection.
            sent += len(piece)
            self._report(sent)
        if sent != self.total:
            raise ValueError(f"the upload's files changed size while being sent ({sent} bytes, not {self.total})")

    def _report(self, sent: int) -> None:
        if self.progress is not None:
            self.progress(sent, self.total)

    def _pieces(self) -> Iterator[bytes]:
        for part in self.parts:
            yield self._head(part)
            yield from part.chunks()
            yield b"\r\n"
        yield self._tail()

    def _head(self, part: FilePart) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{part.name}"; filename="{part.name}"\r\n'
            f"Content-Type: {part.content_type}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()


async def aiter_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    # httpx.AsyncClient only takes async bodies; reads of 64 KiB from a local file are short enough to do inline.
    for chunk in chunks:
        yield chunk


Card = str | Path | dict[str, Any]


def card_to_send(folder: str | Path, card: Card | None, folder_card: bool = True) -> Path | dict[str, Any] | None:
    """The task card an upload sends: `card` when given, else the folder's card.json when it has one
    (and `folder_card` allows it), else none."""
    if card is not None:
        return card if isinstance(card, dict) else Path(card)
    found = Path(folder) / CARD_FILE
    return found if folder_card and found.is_file() else None


def artifact_parts(folder: str | Path, card: Card | None) -> list[FilePart]:
    """The files of a PEFT `save_pretrained` folder (and the task card) as upload parts; checked before sending."""
    folder = Path(folder)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not weights.is_file() and (folder / "adapter_model.bin").is_file():
        raise ValueError(
            f"{folder} has adapter_model.bin only: promptswap accepts safetensors only and never unpickles uploads. "
            "Convert it on a trusted machine with "
            "`PeftModel.from_pretrained(base, DIR).save_pretrained(OUT, safe_serialization=True)` and upload OUT."
        )
    for path in (config, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: upload a folder written by PEFT's save_pretrained")
    parts = [FilePart(CONFIG_FILE, config, "application/json"), FilePart(WEIGHTS_FILE, weights)]
    if card is not None:
        card_bytes = json.dumps(card).encode() if isinstance(card, dict) else Path(card).read_bytes()
        parts.append(FilePart(CARD_FILE, card_bytes, "application/json"))
    return parts
