"""Incremental detokenization and stop strings.

Text is decoded over a short window that starts a few tokens back (prompt tokens at first), so
tokenizers that drop a leading space on a lone token still place spaces right, and a multi-byte
character split across byte-level tokens is held until it is complete. Text that might be the
start of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CONTEXT_TOKENS = 5
INCOMPLETE = "\ufffd"  # what decoding yields for an unfinished UTF-8 sequence


class Tokenizer(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class TextStream:
    """The text of one generated sequence, one token at a time."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = tuple(stop)
        self.text = ""  # decoded so far, before any stop string
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add a token; return the new text that is safe to show (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        if len(after) <= len(before) or after.endswith(INCOMPLETE):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._append(after[len(before) :])

    def finish(self) -> str:
        """The held-back text, once the sequence has ended without a stop string."""
        if not self.stopped:
            tail = self._decode(self.ids[self.prefix_offset :])
            head = self._decode(self.ids[self.prefix_offset : self.read_offset])
            if len(tail) > len(head):
                self.text += tail[len(head) :]
        return self._take(len(self.text))

    def _append(self, delta: str) -> str:
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += delta
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._take(len(self.text))
        return self._take(len(self.text) - self._held_back())

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        for length in range(min(len(self.text), max((len(s) for s in self.stop), default=0)), 0, -1):
            tail = self.text[-length:]
            if any(s.startswith(tail) for s in self.stop):
                return length
        return 0

    def _take(self, end: int) -> str:
        end = max(end, self.emitted)
        piece, self.emitted = self.text[self.emitted : end], end
        return piece
