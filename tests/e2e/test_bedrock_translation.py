"""The official OpenAI SDK reads Bedrock answers the gateway translated: a stand-in upstream replays
AWS's documented Converse bodies and ConverseStream events (tests/fixtures/bedrock/), the latter
framed as a binary AWS event stream, to a gateway whose `bedrock` provider points at it and signs
its requests with SigV4."""

from __future__ import annotations

import json
from typing import Callable

import openai
import pytest
from openai import OpenAI

from conftest import (
    RecordedRequest,
    ReplayingUpstream,
    ask,
    assert_openai_error,
    finish_reasons,
    reassembled_tool_calls,
    streamed_text,
    text_before_stream_error,
)

MODEL = "anthropic/claude-on-bedrock-e2e"
UPSTREAM_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
# The model id is one path segment, its ':' percent-encoded as the AWS SDKs do.
MODEL_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
REGION = "us-west-2"
ACCESS_KEY_ID = "AKIDE2EBEDROCK"
SECRET_ACCESS_KEY = "bedrock-e2e-upstream-secret"
TOP_SONG_TOOL = {
    "type": "function",
    "function": {
        "name": "top_song",
        "description": "The most popular song on a radio station",
        "parameters": {
            "type": "object",
            "properties": {"sign": {"type": "string"}},
            "required": ["sign"],
        },
    },
}


@pytest.fixture(scope="module")
def bedrock(replaying_upstream: ReplayingUpstream, translating_client: Callable) -> OpenAI:
    return translating_client(
        {
            "id": "bedrock",
            "kind": "bedrock",
            "base_url": replaying_upstream.base_url,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        },
        {"id": MODEL, "context_length": 200000},
        {
            "upstream": UPSTREAM_MODEL,
            "prompt": "3",
            "completion": "15",
            "cache_read": "0.3",
            "cache_write": "3.75",
            "supports": ["tools", "tool_choice"],
        },
    )


def assert_signed_for(sent: RecordedRequest, operation: str) -> None:
    assert (sent.method, sent.path) == ("POST", f"{MODEL_PATH}/{operation}")
    authorization = sent.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"), authorization
    assert f"/{REGION}/bedrock/aws4_request" in authorization
    assert "Signature=" in authorization
    assert "x-amz-date" in sent.headers
    assert SECRET_ACCESS_KEY not in json.dumps(sent.headers)


def test_a_signed_converse_answer_parses_with_cached_usage_and_cost(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("bedrock/converse_text.json")

    completion = bedrock.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=200,
    )

    sent = replaying_upstream.last_request()
    assert_signed_for(sent, "converse")
    assert sent.headers["accept"] == "application/json"
    assert sent.json()["system"] == [{"text": "Answer briefly."}]
    assert sent.json()["inferenceConfig"]["maxTokens"] == 200

    assert completion.model == MODEL
    assert completion.model_dump()["provider"] == "bedrock"
    choice = completion.choices[0]
    assert choice.message.content == "Paris is the capital of France."
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (145, 9)
    assert usage.prompt_tokens_details.cached_tokens == 100
    # 25 uncached at $3, 100 cached at $0.30, 20 written at $3.75, 9 out at $15 per million.
    assert usage.model_dump()["cost"] == 0.000315


def test_a_converse_tool_use_parses_as_a_tool_call(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("bedrock/converse_tool_use.json")

    completion = bedrock.chat.completions.create(
        model=MODEL, messages=ask("Most popular song on WZPZ?"), tools=[TOP_SONG_TOOL]
    )

    sent = replaying_upstream.last_request().json()
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "top_song"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll look up the most popular song on WZPZ."
    (call,) = choice.message.tool_calls
    assert call.id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert call.function.name == "top_song"
    assert json.loads(call.function.arguments) == {"sign": "WZPZ"}


def test_an_event_stream_is_translated_to_chunks_with_usage_and_cost(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_event_stream("bedrock/converse_stream_text.jsonl")

    chunks = list(
        bedrock.chat.completions.create(
            model=MODEL,
            messages=ask("Say hello"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    sent = replaying_upstream.last_request()
    assert_signed_for(sent, "converse-stream")
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert streamed_text(chunks) == "Hello world"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 3)
    # 12 in at $3 and 3 out at $15 per million.
    assert usage.model_dump()["cost"] == 0.000081


def test_a_streamed_tool_use_is_accumulated_by_the_sdks_stream_helper(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_event_stream("bedrock/converse_stream_tool_use.jsonl")

    with bedrock.chat.completions.stream(
        model=MODEL,
        messages=ask("Most popular song on WZPZ?"),
        tools=[TOP_SONG_TOOL],
        tool_choice="required",
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    assert_signed_for(replaying_upstream.last_request(), "converse-stream")
    assert replaying_upstream.last_request().json()["toolConfig"]["toolChoice"] == {"any": {}}

    # The input arrives in pieces (`{"sign":` then `"WZPZ"}`); the SDK joins them.
    pieces = [
        event.arguments_delta
        for event in events
        if event.type == "tool_calls.function.arguments.delta"
    ]
    assert len([piece for piece in pieces if piece]) >= 2
    (done,) = [event for event in events if event.type == "tool_calls.function.arguments.done"]
    assert (done.index, done.name) == (0, "top_song")
    assert json.loads(done.arguments) == {"sign": "WZPZ"}
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name) == ("tooluse_abc123", "top_song")
    assert json.loads(call.function.arguments) == {"sign": "WZPZ"}
    chunks = [event.chunk for event in events if event.type == "chunk"]
    assert reassembled_tool_calls(chunks) == {
        0: {"id": "tooluse_abc123", "name": "top_song", "arguments": call.function.arguments}
    }
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (375, 48)
    # 375 in at $3 and 48 out at $15 per million.
    assert final.usage.model_dump()["cost"] == 0.001845


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_throttling_exception_raises_rate_limit_error(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream, stream: bool
) -> None:
    replaying_upstream.replay(
        b'{"message":"Too many requests, please wait before trying again."}',
        status=429,
        headers={"x-amzn-errortype": "ThrottlingException"},
    )

    with pytest.raises(openai.RateLimitError) as raised:
        bedrock.chat.completions.create(model=MODEL, messages=ask("Hello"), stream=stream)

    assert_openai_error(raised.value, 429)
    assert "retry-after" in raised.value.response.headers
    assert SECRET_ACCESS_KEY not in raised.value.response.text


def test_a_validation_exception_raises_bad_request_error(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture(
        "bedrock/validation_error.json",
        status=400,
        headers={"x-amzn-errortype": "ValidationException"},
    )

    with pytest.raises(openai.BadRequestError) as raised:
        bedrock.chat.completions.create(model=MODEL, messages=ask("Hello"), temperature=1.5)

    error = assert_openai_error(raised.value, 400)
    assert "temperature: range: 0..1" in error["message"]


def test_an_exception_mid_stream_is_raised_by_the_sdk_after_the_text(
    bedrock: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_event_stream("bedrock/converse_stream_throttled.jsonl")

    text, error = text_before_stream_error(
        bedrock.chat.completions.create(model=MODEL, messages=ask("Say hello"), stream=True)
    )

    assert text == "Hel"
    assert isinstance(error.body, dict)
    assert error.body["code"] == 429
    assert error.message == error.body["message"]
