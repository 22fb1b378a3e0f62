"""The official OpenAI Python SDK, pointed at Switchyard, works unchanged: the promise to users."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from conftest import Gateway

MODEL = "switchyard/echo"
BAD_KEY = "sk-sy-not-a-real-key"
PROMPT = "the quick brown fox jumps over the lazy dog"


def ask(text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_completion_echoes_the_prompt_with_usage_and_a_generation_id(client: OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=ask())

    assert completion.id.startswith("gen-")
    assert completion.model == MODEL
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == PROMPT
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    # Switchyard's extensions ride along as extra fields the SDK keeps.
    extra = completion.model_dump()
    assert extra["provider"] == "mock"
    assert extra["usage"]["cost"] > 0


def test_a_stream_reassembles_to_the_echo_and_ends_with_a_usage_chunk(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert len(chunks) >= 2
    content = "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices
    )
    assert content == PROMPT
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1 and ids.pop().startswith("gen-")
    assert all(chunk.model == MODEL for chunk in chunks)
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_stream_without_stream_options_still_yields_the_echo(client: OpenAI) -> None:
    with client.chat.completions.create(model=MODEL, messages=ask("one two"), stream=True) as s:
        content = "".join(c.delta.content or "" for chunk in s for c in chunk.choices)
    assert content == "one two"


def test_the_raw_response_carries_the_generation_id_header(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=ask())

    assert raw.status_code == 200
    header = raw.headers.get("x-generation-id")
    assert header is not None and header.startswith("gen-")
    assert raw.parse().id == header


def test_the_generation_record_is_readable_by_its_id(gateway: Gateway, client: OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=ask())
    # The record is written behind the request, in batches: poll briefly rather than sleep.
    record = None
    for _ in range(100):
        try:
            record = client.get(
                "/generation", cast_to=object, options={"params": {"id": completion.id}}
            )
            break
        except openai.NotFoundError:
            time.sleep(0.05)
    assert record is not None, "the generation record never appeared"
    data = record["data"]
    assert data["id"] == completion.id
    assert data["model"] == MODEL


def test_models_list_contains_the_echo_model(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids


def test_a_bad_key_raises_authentication_error(gateway: Gateway) -> None:
    with OpenAI(base_url=gateway.base_url, api_key=BAD_KEY, max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as raised:
            c.chat.completions.create(model=MODEL, messages=ask())
    assert raised.value.status_code == 401
    assert isinstance(raised.value.body, dict) and raised.value.body.get("code") == 401


def test_an_unknown_model_raises_not_found_error(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nobody/no-such-model", messages=ask())
    assert raised.value.status_code == 404
    assert "nobody/no-such-model" in raised.value.message


def test_a_malformed_request_raises_bad_request_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=ask(), extra_body={"messages": "not a list"}
        )
    assert raised.value.status_code == 400


def test_a_malformed_streaming_request_fails_before_the_stream_starts(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=ask(), stream=True, extra_body={"messages": 42}
        )


def test_a_body_that_is_not_json_gets_a_400_in_the_error_shape(gateway: Gateway) -> None:
    status, body = post_raw(gateway, "/chat/completions", b"{not json")
    assert status == 400
    error = body["error"]
    assert error["code"] == 400
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)


def test_the_api_v1_prefix_serves_the_same_api(gateway: Gateway) -> None:
    with OpenAI(
        base_url=f"{gateway.root}/api/v1", api_key=gateway.key, max_retries=0, timeout=15
    ) as c:
        completion = c.chat.completions.create(model=MODEL, messages=ask("via api"))
    assert completion.choices[0].message.content == "via api"


# Named to run last in this file: it reads the log the tests above made the server write.
def test_zz_keys_never_appear_in_the_server_log(gateway: Gateway) -> None:
    log = gateway.log.read_text(errors="replace")
    assert gateway.key not in log
    assert gateway.key[len("sk-sy-") :] not in log
    assert BAD_KEY not in log


def post_raw(gateway: Gateway, path: str, body: bytes) -> tuple[int, dict]:
    """A request no SDK would send, for the error paths the SDK cannot reach."""
    request = urllib.request.Request(
        f"{gateway.base_url}{path}",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
