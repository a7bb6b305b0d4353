"""Incremental text: multi-byte characters split across byte-level tokens, and stop strings across tokens."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from server.engine.detokenizer import TextStream
from tests.factories import CORPUS, make_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.mark.parametrize("text", [*CORPUS, " leading space", "🎬🍿👍🤖🚀", "a" * 40, "é" * 9 + "日本"])
def test_streamed_pieces_concatenate_to_the_text(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    prompt = tokenizer("Review:")["input_ids"]
    ids = tokenizer(text)["input_ids"]
    stream = TextStream(tokenizer, prompt)
    pieces = [stream.push(token) for token in ids]
    pieces.append(stream.finish())
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_a_character_split_over_byte_tokens_comes_out_whole(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer("🎬")["input_ids"]
    assert len(ids) > 1, "the emoji is several byte-level tokens"
    stream = TextStream(tokenizer, [])
    pieces = [stream.push(token) for token in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🎬"


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("Sentiment: positive. Review: fine.", ["Review"], "Sentiment: positive. "),
        ("Sentiment: positive. Review: fine.", ["tive. Rev", "nothing"], "Sentiment: posi"),
        ("Emoji too: 🎬🍿👍", ["🍿"], "Emoji too: 🎬"),
        ("Awful plot; I left early.", ["zzz"], "Awful plot; I left early."),
        ("Awful plot; I left early.", ["early.", "plot"], "Awful "),
        # at the very start, while the text is still shorter than the stop string
        ("Review: fine.", ["Review:"], ""),
        ("Review: fine.", ["Reviewing"], "Review: fine."),
    ],
)
def test_stop_strings_across_tokens(
    tokenizer: PreTrainedTokenizerFast, text: str, stop: list[str], expected: str
) -> None:
    ids = tokenizer(text)["input_ids"]
    stream = TextStream(tokenizer, [], stop)
    pieces = []
    for token in ids:
        pieces.append(stream.push(token))
        assert not any(s.startswith("".join(pieces)) for s in stop if "".join(pieces)), "a stop's start was shown"
        if stream.stopped:
            break
    else:
        pieces.append(stream.finish())
    assert "".join(pieces) == expected
    assert stream.stopped == (expected != text)
    assert not any(s in "".join(pieces) for s in stop)


def test_text_that_may_begin_a_stop_string_is_held_until_it_does_not(tokenizer: PreTrainedTokenizerFast) -> None:
    stream = TextStream(tokenizer, [], ["ab!"])
    pieces = [stream.push(token) for token in tokenizer("xa")["input_ids"]]
    assert "".join(pieces) == "x"  # "a" may start "ab!"
    pieces = [stream.push(token) for token in tokenizer("c")["input_ids"]]
    assert "".join(pieces) == "ac"
