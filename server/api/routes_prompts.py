"""The prompt registry over HTTP: upload (multipart), list, show, delete, rollback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from prompt_store.errors import ArtifactError, ArtifactTooLarge, Conflict, UnknownTask, UnknownVersion
from prompt_store.records import VersionRecord
from prompt_store.store import PromptStore
from server.api.auth import require_admin, require_reader
from server.api.responses import (
    CHANGES,
    EVERY_ROUTE,
    READS,
    PromptList,
    TaskAnswer,
    TaskWithVersions,
    UploadAnswer,
    answers,
)
from server.api.schemas import RollbackBody
from server.api.service import record_json, state_of
from server.errors import InvalidRequest

router = APIRouter()

CONFIG_FIELD, WEIGHTS_FIELD, CARD_FIELD = "adapter_config.json", "adapter_model.safetensors", "card.json"


async def read_part(form: Any, field: str, limit: int, required: bool) -> bytes | None:
    part = form.get(field)
    if part is None:
        if required:
            raise ArtifactError(f"{field}: missing from the upload (multipart field named {field!r})")
        return None
    if not isinstance(part, UploadFile):
        return str(part).encode()
    data: bytes = await part.read(limit + 1)
    if len(data) > limit:
        raise ArtifactTooLarge(f"{field} is larger than the limit of {limit} bytes")
    return data


# The upload is read by hand (to stream it under the size limit), so its body is described here.
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [CONFIG_FIELD, WEIGHTS_FIELD],
                    "properties": {
                        field: {"type": "string", "format": "binary"}
                        for field in (CONFIG_FIELD, WEIGHTS_FIELD, CARD_FIELD)
                    },
                }
            }
        },
    }
}


UPLOAD_ANSWERS = {
    **answers(UploadAnswer, (*CHANGES, 422, 507), status=201),
    200: {
        "model": UploadAnswer,
        "description": "The files and card of the current version: it stays, nothing is created",
    },
}


@router.post(
    "/v1/prompts/{task}", status_code=201, dependencies=[Depends(require_admin)], openapi_extra=UPLOAD_SCHEMA,
    response_model=None, responses=UPLOAD_ANSWERS,
)  # fmt: skip
async def upload(task: str, request: Request, response: Response) -> dict[str, Any]:
    state = state_of(request)
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise InvalidRequest(
            f"upload: send multipart/form-data with the files {CONFIG_FIELD} and {WEIGHTS_FIELD} "
            f"(and optionally {CARD_FIELD})"
        )
    limit = state.config.max_upload_bytes
    async with request.form(max_files=3, max_fields=3, max_part_size=limit) as form:
        if "adapter_model.bin" in form:
            raise ArtifactError(
                "adapter_model.bin is a pickle and is never read; upload adapter_model.safetensors "
                "(PeftModel.from_pretrained(base, DIR).save_pretrained(OUT, safe_serialization=True))"
            )
        unexpected = sorted(set(form.keys()) - {CONFIG_FIELD, WEIGHTS_FIELD, CARD_FIELD})
        if unexpected:
            raise ArtifactError(
                f"unexpected parts {unexpected}: an upload holds {CONFIG_FIELD}, {WEIGHTS_FIELD} and optionally "
                f"{CARD_FIELD}"
            )
        config = await read_part(form, CONFIG_FIELD, limit, required=True)
        weights = await read_part(form, WEIGHTS_FIELD, limit, required=True)
        card = await read_part(form, CARD_FIELD, limit, required=False)
    assert config is not None and weights is not None
    uploaded = await state.registry.upload(task, config, weights, card)
    if not uploaded.created:
        response.status_code = 200  # the bytes and card of the current version: it stays, nothing is created
    return {**record_json(uploaded.record, state.registry.spec), "unchanged": not uploaded.created}


@router.get(
    "/v1/prompts", dependencies=[Depends(require_reader)], response_model=None,
    responses=answers(PromptList, (401, 403, *EVERY_ROUTE)),
)  # fmt: skip
async def list_prompts(request: Request) -> dict[str, Any]:
    state = state_of(request)
    prompts = []
    for task, version in (await state.store.list_tasks()).items():
        try:
            record = await state.store.get_record(task, version)
        except (UnknownTask, UnknownVersion):
            continue  # deleted (or deleted and uploaded again) since the listing: not there any more
        prompts.append({**record_json(record, state.registry.spec), "current_version": version})
    return {"prompts": prompts}


@router.get(
    "/v1/prompts/{task}", dependencies=[Depends(require_reader)], response_model=None,
    responses=answers(TaskWithVersions, (*READS, 409)),
)  # fmt: skip
async def show(task: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    current, versions = await read_task(state.store, task)
    spec = state.registry.spec
    return {
        **record_json(current, spec),
        "current_version": current.version,
        "versions": [record_json(r, spec) for r in versions],
    }


async def read_task(store: PromptStore, task: str, attempts: int = 3) -> tuple[VersionRecord, list[VersionRecord]]:
    """A task's current version and all its versions. They take two reads; when the task changes between
    them (deleted and uploaded again, its versions starting over) the reads are taken again."""
    for _ in range(attempts):
        current = await store.current_version(task)  # UnknownTask once it is gone
        versions = await store.list_versions(task)
        record = next((r for r in versions if r.version == current), None)
        if record is not None:
            return record, versions
    raise Conflict(f"task {task!r} kept changing while it was read; read it again")


@router.delete(
    "/v1/prompts/{task}", status_code=204, dependencies=[Depends(require_admin)], response_model=None,
    responses=answers(None, CHANGES, status=204),
)  # fmt: skip
async def delete(task: str, request: Request) -> Response:
    await state_of(request).registry.delete(task)
    return Response(status_code=204)


@router.post(
    "/v1/prompts/{task}/rollback", dependencies=[Depends(require_admin)], response_model=None,
    responses=answers(TaskAnswer, CHANGES),
)  # fmt: skip
async def rollback(task: str, body: RollbackBody, request: Request) -> dict[str, Any]:
    registry = state_of(request).registry
    record = await registry.rollback(task, body.version)
    return {**record_json(record, registry.spec), "current_version": record.version}
