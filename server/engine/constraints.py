"""Constrained decoding: a JSON schema, a regular expression or a list of choices, as a token mask per row.

Grammars are llguidance's, built against the served tokenizer. A constraint is checked when its request
arrives (an invalid schema or regex is an `InvalidRequest` that names the problem) and compiled once into a
template matcher, kept in a bounded cache; each constrained row gets its own copy, which advances with every
token the row samples. Before a draw, the row's line of the batch's bitmask allows only the tokens that keep
the text inside the grammar, and the end-of-sequence tokens once the text is complete.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from server.errors import InvalidRequest

MAX_CHOICES = 256
MAX_SPEC_CHARACTERS = 64 * 1024  # a schema's JSON, a regex, or the choices' JSON
CACHED_GRAMMARS = 256


@dataclass(frozen=True)
class Constraint:
    """What a row's text must match; `spec` is the schema as JSON, the regex, or the choices as a JSON list."""

    kind: Literal["json_schema", "regex", "choice"]
    spec: str

    @classmethod
    def json_schema(cls, schema: Any) -> Constraint:
        if not isinstance(schema, dict | bool):
            raise InvalidRequest("json_schema: expected a JSON Schema object")
        return cls("json_schema", json.dumps(schema, sort_keys=True, separators=(",", ":")))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> Constraint:
        if not 1 <= len(options) <= MAX_CHOICES or any(not option for option in options):
            raise InvalidRequest(f"choice: expected 1 to {MAX_CHOICES} non-empty strings")
        return cls("choice", json.dumps(list(options)))

    def grammar(self) -> str:
        """The constraint as an llguidance grammar."""
        if len(self.spec) > MAX_SPEC_CHARACTERS:
            raise InvalidRequest(f"{self.kind}: longer than {MAX_SPEC_CHARACTERS} characters")
        if self.kind == "json_schema":  # compact JSON unless the schema's "x-guidance" asks otherwise
            return llguidance.LLMatcher.grammar_from_json_schema(self.spec, defaults={"whitespace_flexible": False})
        if self.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(self.spec)
        # Each choice as a literal string of the grammar (JSON's escapes are the grammar's).
        return "start: " + " | ".join(json.dumps(option) for option in json.loads(self.spec))


class Grammars:
    """Compiled constraints for one tokenizer, shared by the request checks and the engine thread."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: frozenset[int]) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._templates: OrderedDict[Constraint, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, constraint: Constraint) -> None:
        """Compile `constraint` (or find it compiled); raise `InvalidRequest` naming what is wrong."""
        self._template(constraint)

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        """A fresh matcher for one row."""
        return self._template(constraint).deep_copy()

    def _template(self, constraint: Constraint) -> llguidance.LLMatcher:
        with self._lock:
            template = self._templates.get(constraint)
            if template is not None:
                self._templates.move_to_end(constraint)
                return template
            tokenizer = self._llg_tokenizer()
        grammar = _compile(constraint)
        error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if error:
            raise InvalidRequest(f"{constraint.kind}: {error.strip()}")
        template = llguidance.LLMatcher(tokenizer, grammar)
        if template.is_error():
            raise InvalidRequest(f"{constraint.kind}: {template.get_error()}")
        with self._lock:
            self._templates[constraint] = template
            while len(self._templates) > CACHED_GRAMMARS:
                self._templates.popitem(last=False)
        return template

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        if self._tokenizer is None:  # about half a second for a 50k vocabulary: built on first use
            eos = self._eos or None
            self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=eos)
        return self._tokenizer


def _compile(constraint: Constraint) -> str:
    try:
        return constraint.grammar()
    except InvalidRequest:
        raise
    except Exception as error:  # llguidance reports a bad schema or regex by raising
        raise InvalidRequest(f"{constraint.kind}: {error}") from error


def mask_logits(logits: torch.Tensor, matchers: Sequence[llguidance.LLMatcher | None]) -> None:
    """Set to -inf, in place, every token a row's matcher forbids; rows without one are left alone.

    logits: [B, V] float32, V the model's vocabulary (the bitmask's width)."""
    constrained = [i for i, matcher in enumerate(matchers) if matcher is not None]
    if not constrained:
        return
    bitmask = llguidance.torch.allocate_token_bitmask(len(constrained), logits.shape[-1])
    for line, i in enumerate(constrained):
        llguidance.torch.fill_next_token_bitmask(matchers[i], bitmask, line)  # type: ignore[arg-type]
    index = torch.tensor(constrained, device=logits.device)
    rows = logits[index]
    llguidance.torch.apply_token_bitmask_inplace(rows, bitmask.to(logits.device))
    logits[index] = rows
