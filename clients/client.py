"""`Client` and `AsyncClient` for the promptswap HTTP API (API.md), built on httpx and nothing of the server.

Both classes build their requests and read their answers with the same module-level helpers; only the I/O differs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypedDict, Unpack
from urllib.parse import quote

import httpx

from clients.errors import raise_for_response
from clients.multipart import Card, MultipartBody, Progress, aiter_chunks, artifact_parts, card_to_send
from clients.sse import aiter_events, iter_events

DEFAULT_URL = "http://127.0.0.1:8000"
Labels = list[str] | dict[str, str]


class GenerateOptions(TypedDict, total=False):
    """Keyword options of `generate` and `stream`; None (or leaving one out) keeps the server's default."""

    version: int | None
    task_index: int | None
    max_new_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    seed: int | None
    stop: str | list[str] | None


SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop")


@dataclass(frozen=True)
class Call:
    """One HTTP request, built once for both clients."""

    method: str
    path: str
    body: dict[str, Any] | None = None


def without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def task_path(task: str, suffix: str = "") -> str:
    # Quoted so that "?", "#" or spaces in a bad name stay in the path and the server's name check answers.
    return f"/v1/prompts/{quote(task, safe='')}{suffix}"


def generate_call(task: str | None, inputs: str | list[str], options: GenerateOptions, stream: bool) -> Call:
    """POST /v1/generate with only the options that are set."""
    unknown = options.keys() - GenerateOptions.__optional_keys__
    if unknown:  # a TypedDict is not checked at run time; a typo must not be dropped silently
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    sampling: dict[str, Any] = {key: options.get(key) for key in SAMPLING_KEYS}
    if isinstance(sampling["stop"], str):
        sampling["stop"] = [sampling["stop"]]
    fields: dict[str, Any] = {"task": task, "inputs": inputs, "version": options.get("version")}
    fields["task_index"] = options.get("task_index", 0)
    fields["parameters"] = without_none(sampling)
    return Call("POST", "/v1/generate", {**without_none(fields), "stream": stream})


def classify_call(
    task: str | None, inputs: str | list[str], labels: Labels | None, version: int | None, task_index: int
) -> Call:
    fields = {"task": task, "inputs": inputs, "labels": labels, "version": version, "task_index": task_index}
    return Call("POST", "/v1/classify", without_none(fields))


def completions_call(model: str, prompt: str, fields: dict[str, Any]) -> Call:
    if fields.get("stream"):
        raise ValueError("Client.completions does not stream; use `stream` or the official openai client")
    return Call("POST", "/v1/completions", {"model": model, "prompt": prompt, **fields})


def decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer (None when there is none); typed errors for everything else."""
    raise_for_response(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def is_up(response: httpx.Response) -> bool:
    """For /health and /ready: 2xx is True, 503 is False, any other answer raises."""
    if response.status_code == 503:
        return False
    raise_for_response(response)
    return True


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# --- the clients ----------------------------------------------------------------------------------------------------


class Client:
    """Blocking client. `api_key` is sent as `Authorization: Bearer <key>` (the admin or the inference key)."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 300.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers=auth_headers(api_key), timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        return decode(self._http.request(call.method, call.path, json=call.body))

    def generate(self, task: str | None, inputs: str | list[str], **options: Unpack[GenerateOptions]) -> dict[str, Any]:
        """POST /v1/generate. Options: version, task_index, max_new_tokens, temperature, top_k, top_p, seed, stop."""
        return self._send(generate_call(task, inputs, options, stream=False))

    def stream(
        self, task: str | None, inputs: str | list[str], **options: Unpack[GenerateOptions]
    ) -> Iterator[dict[str, Any]]:
        """Generate with `"stream": true`, yielding each event (per token, then per row with `finish_reason`)."""
        call = generate_call(task, inputs, options, stream=True)
        with self._http.stream(call.method, call.path, json=call.body) as response:
            if not response.is_success:
                response.read()
                raise_for_response(response)
            yield from iter_events(response)

    def classify(
        self,
        task: str | None,
        inputs: str | list[str],
        labels: Labels | None = None,
        *,
        version: int | None = None,
        task_index: int = 0,
    ) -> dict[str, Any]:
        """POST /v1/classify; `labels` override the task card's (a list, or {label: verbalizer text})."""
        return self._send(classify_call(task, inputs, labels, version, task_index))

    def completions(self, model: str, prompt: str, **fields: Any) -> dict[str, Any]:
        """POST /v1/completions (OpenAI format, not streamed); `fields` go into the body as they are."""
        return self._send(completions_call(model, prompt, fields))

    def upload(
        self,
        task: str,
        folder: str | Path,
        card: Card | None = None,
        progress: Progress | None = None,
        *,
        folder_card: bool = True,
    ) -> dict[str, Any]:
        """Upload a PEFT folder as the next version of `task`, with `card` (a file or a dict), else the folder's
        card.json if it has one and `folder_card`; `progress(sent, total)` follows the body's bytes. The answer
        says `"unchanged": true` (and no version is made) when the bytes and card are the current version's."""
        body = MultipartBody(artifact_parts(folder, card_to_send(folder, card, folder_card)), progress)
        return decode(self._http.post(task_path(task), content=body, headers=body.headers))

    def list_prompts(self) -> list[dict[str, Any]]:
        """Every task with its current version."""
        return self._send(Call("GET", "/v1/prompts"))["prompts"]

    def show(self, task: str) -> dict[str, Any]:
        """One task with all its `versions`."""
        return self._send(Call("GET", task_path(task)))

    def delete(self, task: str) -> None:
        """Delete a task and all its versions."""
        self._send(Call("DELETE", task_path(task)))

    def rollback(self, task: str, version: int) -> dict[str, Any]:
        """Make an earlier `version` of `task` current again."""
        return self._send(Call("POST", task_path(task, "/rollback"), {"version": version}))

    def models(self) -> list[dict[str, Any]]:
        """The base model and every task, as OpenAI's model list `data`."""
        return self._send(Call("GET", "/v1/models"))["data"]

    def health(self) -> bool:
        """True while the server process answers; False on 503."""
        return is_up(self._http.get("/health"))

    def ready(self) -> bool:
        """True once the model is loaded and the registry answers; False on 503."""
        return is_up(self._http.get("/ready"))


class AsyncClient:
    """`Client` for asyncio: the same methods, awaited (and `stream` is an async iterator)."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 300.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=auth_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        return decode(await self._http.request(call.method, call.path, json=call.body))

    async def generate(
        self, task: str | None, inputs: str | list[str], **options: Unpack[GenerateOptions]
    ) -> dict[str, Any]:
        """See `Client.generate`."""
        return await self._send(generate_call(task, inputs, options, stream=False))

    async def stream(
        self, task: str | None, inputs: str | list[str], **options: Unpack[GenerateOptions]
    ) -> AsyncIterator[dict[str, Any]]:
        """See `Client.stream`."""
        call = generate_call(task, inputs, options, stream=True)
        async with self._http.stream(call.method, call.path, json=call.body) as response:
            if not response.is_success:
                await response.aread()
                raise_for_response(response)
            async for event in aiter_events(response):
                yield event

    async def classify(
        self,
        task: str | None,
        inputs: str | list[str],
        labels: Labels | None = None,
        *,
        version: int | None = None,
        task_index: int = 0,
    ) -> dict[str, Any]:
        """See `Client.classify`."""
        return await self._send(classify_call(task, inputs, labels, version, task_index))

    async def completions(self, model: str, prompt: str, **fields: Any) -> dict[str, Any]:
        """See `Client.completions`."""
        return await self._send(completions_call(model, prompt, fields))

    async def upload(
        self,
        task: str,
        folder: str | Path,
        card: Card | None = None,
        progress: Progress | None = None,
        *,
        folder_card: bool = True,
    ) -> dict[str, Any]:
        """See `Client.upload`."""
        body = MultipartBody(artifact_parts(folder, card_to_send(folder, card, folder_card)), progress)
        response = await self._http.post(task_path(task), content=aiter_chunks(body), headers=body.headers)
        return decode(response)

    async def list_prompts(self) -> list[dict[str, Any]]:
        """See `Client.list_prompts`."""
        return (await self._send(Call("GET", "/v1/prompts")))["prompts"]

    async def show(self, task: str) -> dict[str, Any]:
        """See `Client.show`."""
        return await self._send(Call("GET", task_path(task)))

    async def delete(self, task: str) -> None:
        """See `Client.delete`."""
        await self._send(Call("DELETE", task_path(task)))

    async def rollback(self, task: str, version: int) -> dict[str, Any]:
        """See `Client.rollback`."""
        return await self._send(Call("POST", task_path(task, "/rollback"), {"version": version}))

    async def models(self) -> list[dict[str, Any]]:
        """See `Client.models`."""
        return (await self._send(Call("GET", "/v1/models")))["data"]

    async def health(self) -> bool:
        """See `Client.health`."""
        return is_up(await self._http.get("/health"))

    async def ready(self) -> bool:
        """See `Client.ready`."""
        return is_up(await self._http.get("/ready"))
