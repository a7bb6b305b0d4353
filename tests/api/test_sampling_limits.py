"""One table of sampling bounds: the request schema, the engine's check and the task card's defaults
accept and refuse the same values."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pydantic import ValidationError

from prompt_store.errors import InvalidCard
from prompt_store.records import parse_card
from prompt_store.sampling_limits import MAX_NEW_TOKENS, MAX_TEMPERATURE, MIN_TEMPERATURE
from server.api.schemas import Parameters
from server.engine.sampling import SamplingParams
from server.errors import InvalidRequest

EDGES = [
    ("max_new_tokens", 1, True),
    ("max_new_tokens", MAX_NEW_TOKENS, True),
    ("max_new_tokens", 0, False),
    ("max_new_tokens", MAX_NEW_TOKENS + 1, False),
    ("temperature", 0.0, True),
    ("temperature", MIN_TEMPERATURE, True),
    ("temperature", MIN_TEMPERATURE / 2, False),
    ("temperature", MAX_TEMPERATURE, True),
    ("temperature", MAX_TEMPERATURE * 2, False),
    ("top_k", 1, True),
    ("top_k", 0, False),
    ("top_p", 1.0, True),
    ("top_p", 0.0, False),
    ("top_p", 1.5, False),
    ("stop", ["a"] * 16, True),
    ("stop", ["a"] * 17, False),
    ("stop", ["x" * 257], False),
]


def schema_accepts(name: str, value: object) -> bool:
    try:
        Parameters.model_validate({name: value})
    except ValidationError:
        return False
    return True


def engine_accepts(name: str, value: object) -> bool:
    try:
        replace(SamplingParams(), **{name: tuple(value) if isinstance(value, list) else value}).check()
    except InvalidRequest:
        return False
    return True


def card_accepts(name: str, value: object) -> bool:
    try:
        parse_card(json.dumps({"defaults": {name: value}}).encode())
    except InvalidCard:
        return False
    return True


@pytest.mark.parametrize(("name", "value", "accepted"), EDGES)
def test_schema_engine_and_card_share_each_bound(name: str, value: object, accepted: bool) -> None:
    # The schema bounds how many stop strings; their length is the engine's check (the schema would
    # otherwise need the same rule twice).
    judges = (
        [engine_accepts, card_accepts]
        if name == "stop" and value == ["x" * 257]
        else [schema_accepts, engine_accepts, card_accepts]
    )
    assert [judge(name, value) for judge in judges] == [accepted] * len(judges)
