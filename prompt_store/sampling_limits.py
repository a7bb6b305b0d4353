"""The bounds of every sampling field, in one table: the HTTP schemas, the engine's check of each request
and the task card's `defaults` all read it. It lives in the lowest layer so that the registry can."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

MAX_NEW_TOKENS = 1 << 20
MAX_TEMPERATURE = 100.0
# Below this (but above 0, which means greedy) logits / temperature overflow float32 and the
# softmax is no distribution any more; 0.01 already puts all the mass on the top token in practice.
MIN_TEMPERATURE = 1e-2
MAX_TOP_K = 1 << 31  # a schema bound; the model's vocabulary is the real one, checked by the engine
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
MAX_TOP_LOGPROBS = 20
MAX_PENALTY = 2.0  # presence and frequency penalties lie in [-MAX_PENALTY, MAX_PENALTY]
MAX_LOGIT_BIAS = 100.0  # a bias lies in [-MAX_LOGIT_BIAS, MAX_LOGIT_BIAS]
MAX_LOGIT_BIASES = 300  # tokens one request may bias


@dataclass(frozen=True)
class Bounds:
    """`low`..`high`, both ends in, unless `low_open` leaves `low` itself out."""

    low: float
    high: float
    low_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def field(self, default: Any = None) -> Any:
        """A pydantic model field, `default` when absent, that refuses what `holds` refuses."""
        if self.low_open:
            return Field(default, gt=self.low, le=self.high)
        return Field(default, ge=self.low, le=self.high)

    def constraint(self) -> Any:
        """The same bounds for `Annotated[...]`, where a field has no default."""
        return Field(gt=self.low, le=self.high) if self.low_open else Field(ge=self.low, le=self.high)

    def __str__(self) -> str:
        return f"a value in ({self.low}, {self.high}]" if self.low_open else f"{self.low}..{self.high}"


LIMITS: dict[str, Bounds] = {
    "max_new_tokens": Bounds(1, MAX_NEW_TOKENS),
    "top_k": Bounds(1, MAX_TOP_K),
    "top_p": Bounds(0.0, 1.0, low_open=True),
    "seed": Bounds(0, (1 << 63) - 1),
    "logprobs": Bounds(0, MAX_TOP_LOGPROBS),  # how many top tokens to report beside each token's own
    "presence_penalty": Bounds(-MAX_PENALTY, MAX_PENALTY),
    "frequency_penalty": Bounds(-MAX_PENALTY, MAX_PENALTY),
}


def valid_temperature(value: float, largest: float = MAX_TEMPERATURE) -> bool:
    """0 (greedy), or a finite temperature from MIN_TEMPERATURE to `largest`."""
    return value == 0.0 or MIN_TEMPERATURE <= value <= largest


def temperature_problem(value: float, largest: float = MAX_TEMPERATURE) -> str | None:
    if valid_temperature(value, largest):
        return None
    return f"expected 0 (greedy) or {MIN_TEMPERATURE}..{largest}, found {value}"


def stop_problem(stop: list[str] | tuple[str, ...]) -> str | None:
    if len(stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_LENGTH for s in stop):
        return f"expected at most {MAX_STOP_STRINGS} non-empty strings of up to {MAX_STOP_LENGTH} characters"
    return None


def sampling_problems(values: dict[str, Any]) -> list[str]:
    """'field: what is wrong' for each sampling value out of bounds (None values are left out)."""
    problems = [
        f"{name}: expected {bounds}, found {values[name]}"
        for name, bounds in LIMITS.items()
        if values.get(name) is not None and not bounds.holds(values[name])
    ]
    if values.get("temperature") is not None and (problem := temperature_problem(values["temperature"])):
        problems.append(f"temperature: {problem}")
    if values.get("stop") is not None and (problem := stop_problem(values["stop"])):
        problems.append(f"stop: {problem}")
    return problems
