"""The upload body: the files a PEFT folder holds, as multipart/form-data, with progress up to the last byte."""

from __future__ import annotations

import json
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest

from clients.multipart import CHUNK_BYTES, MultipartBody, artifact_parts


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8}')
    # Several chunks long, and not a multiple of the chunk size, so progress has intermediate steps.
    (tmp_path / "adapter_model.safetensors").write_bytes(bytes(range(256)) * (3 * CHUNK_BYTES // 256) + b"tail")
    return tmp_path


def parse_form(body: MultipartBody, data: bytes) -> dict[str, MIMEPart]:
    """The parts of a form body by field name, read back by the standard library's MIME parser."""
    head = f"Content-Type: {body.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(EmailMessage, policy=HTTP).parsebytes(head + data)
    return {str(part.get_param("name", header="content-disposition")): part for part in message.iter_parts()}


def test_body_holds_the_folder_files_and_card_under_their_own_names(folder: Path) -> None:
    card = {"template": "Review: {input}\nSentiment:", "labels": ["positive", "negative"]}
    body = MultipartBody(artifact_parts(folder, card))
    data = b"".join(body)
    assert len(data) == body.total == int(body.headers["Content-Length"])
    parts = parse_form(body, data)
    assert list(parts) == ["adapter_config.json", "adapter_model.safetensors", "card.json"]
    for name, part in parts.items():
        assert part.get_filename() == name
    assert parts["adapter_config.json"].get_payload(decode=True) == (folder / "adapter_config.json").read_bytes()
    weights = parts["adapter_model.safetensors"].get_payload(decode=True)
    assert weights == (folder / "adapter_model.safetensors").read_bytes()
    assert parts["card.json"].get_payload(decode=True) == json.dumps(card).encode()


def test_card_from_a_file_is_sent_as_written(folder: Path, tmp_path: Path) -> None:
    card_file = tmp_path / "my_card.json"
    card_file.write_text('{"description": "café"}')
    body = MultipartBody(artifact_parts(folder, card_file))
    assert parse_form(body, b"".join(body))["card.json"].get_payload(decode=True) == card_file.read_bytes()


def test_progress_rises_to_exactly_the_total(folder: Path) -> None:
    calls: list[tuple[int, int]] = []
    body = MultipartBody(artifact_parts(folder, None), lambda sent, total: calls.append((sent, total)))
    data = b"".join(body)
    sent = [call[0] for call in calls]
    assert {call[1] for call in calls} == {len(data)}
    assert sent[0] == 0 and sent[-1] == len(data)
    assert sent == sorted(sent) and len(sent) > 4


def test_pickle_only_folder_is_refused_before_sending(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="safetensors only") as caught:
        artifact_parts(tmp_path, None)
    assert "save_pretrained(OUT, safe_serialization=True)" in str(caught.value)


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_file_is_named(folder: Path, missing: str) -> None:
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        artifact_parts(folder, None)
