"""The official OpenAI SDK reads Gemini answers the gateway translated: a stand-in upstream replays
Google's documented `generateContent` bodies and `?alt=sse` streams (tests/fixtures/gemini/) to a
gateway whose `gemini` provider points at it."""

from __future__ import annotations

import json
from typing import Callable

import openai
import pytest
from openai import OpenAI

from conftest import (
    ReplayingUpstream,
    ask,
    assert_openai_error,
    finish_reasons,
    reassembled_tool_calls,
    streamed_text,
    text_before_stream_error,
)

MODEL = "google/gemini-e2e"
UPSTREAM_MODEL = "gemini-2.5-flash"
UPSTREAM_KEY = "AIza-e2e-upstream"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
# 8 prompt tokens at $0.30 and 10 completion tokens at $2.50 per million: 27.4 micro-USD, rounded.
TEXT_COST = 0.000027


@pytest.fixture(scope="module")
def gemini(replaying_upstream: ReplayingUpstream, translating_client: Callable) -> OpenAI:
    return translating_client(
        {
            "id": "google",
            "kind": "gemini",
            "base_url": f"{replaying_upstream.base_url}/v1beta",
            "api_key": UPSTREAM_KEY,
        },
        {"id": MODEL, "context_length": 1048576},
        {
            "upstream": UPSTREAM_MODEL,
            "prompt": "0.3",
            "completion": "2.5",
            "cache_read": "0.03",
            "max_output": 65536,
            "supports": ["tools", "tool_choice", "reasoning"],
        },
    )


def test_a_translated_completion_parses_with_usage_and_cost(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("gemini/text_response.json")

    completion = gemini.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Explain AI in one sentence."},
        ],
        max_tokens=200,
    )

    sent = replaying_upstream.last_request()
    assert (sent.method, sent.path) == ("POST", f"/v1beta/models/{UPSTREAM_MODEL}:generateContent")
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert "authorization" not in sent.headers
    assert sent.json()["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.json()["generationConfig"]["maxOutputTokens"] == 200

    assert completion.id.startswith("gen-")
    assert completion.model == MODEL
    assert completion.model_dump()["provider"] == "google"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "AI learns patterns from data to make predictions."
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 10, 18)
    assert usage.model_dump()["cost"] == TEXT_COST


def test_a_translated_stream_yields_the_text_then_usage_with_cost(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("gemini/text_stream.sse")

    chunks = list(
        gemini.chat.completions.create(
            model=MODEL,
            messages=ask("Explain AI in one sentence."),
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    sent = replaying_upstream.last_request()
    assert sent.path == f"/v1beta/models/{UPSTREAM_MODEL}:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    assert streamed_text(chunks) == "AI learns patterns from data to make predictions."
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (8, 10)
    assert usage.model_dump()["cost"] == TEXT_COST


def test_a_streamed_function_call_is_accumulated_by_the_sdks_stream_helper(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("gemini/function_call_stream.sse")

    with gemini.chat.completions.stream(
        model=MODEL,
        messages=ask("Weather in Paris?"),
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    sent = replaying_upstream.last_request().json()
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    # Gemini sends a call whole with its finish reason; the gateway streams the call, then the
    # finish in a chunk of its own as OpenAI does, so the SDK's helper closes the call.
    (delta,) = [event for event in events if event.type == "tool_calls.function.arguments.delta"]
    assert delta.name == "get_weather"
    assert json.loads(delta.arguments) == {"location": "Paris", "unit": "celsius"}
    (done,) = [event for event in events if event.type == "tool_calls.function.arguments.done"]
    assert done.name == "get_weather"
    assert json.loads(done.arguments) == {"location": "Paris", "unit": "celsius"}
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "celsius"}
    # The same call, reassembled by hand from the raw chunks.
    chunks = [event.chunk for event in events if event.type == "chunk"]
    assert reassembled_tool_calls(chunks) == {
        0: {"id": call.id, "name": "get_weather", "arguments": call.function.arguments}
    }
    assert final.usage is not None
    assert final.usage.completion_tokens == 58
    assert final.usage.completion_tokens_details.reasoning_tokens == 40


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_resource_exhausted_raises_rate_limit_error_with_retry_after(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream, stream: bool
) -> None:
    replaying_upstream.replay_fixture("gemini/error_resource_exhausted.json", status=429)

    with pytest.raises(openai.RateLimitError) as raised:
        gemini.chat.completions.create(model=MODEL, messages=ask("Hello"), stream=stream)

    assert_openai_error(raised.value, 429)
    # From the body's RetryInfo detail (`"retryDelay": "37s"`).
    assert raised.value.response.headers["retry-after"] == "37"
    assert UPSTREAM_KEY not in raised.value.response.text


def test_an_invalid_argument_raises_bad_request_error_with_googles_reason(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    body = {
        "error": {
            "code": 400,
            "message": "* GenerationConfig.temperature: out of range",
            "status": "INVALID_ARGUMENT",
        }
    }
    replaying_upstream.replay(json.dumps(body).encode(), status=400)

    with pytest.raises(openai.BadRequestError) as raised:
        gemini.chat.completions.create(model=MODEL, messages=ask("Hello"), temperature=1.5)

    error = assert_openai_error(raised.value, 400)
    assert "temperature: out of range" in error["message"]


def test_an_error_event_mid_stream_is_raised_by_the_sdk_after_the_text(
    gemini: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("gemini/error_stream.sse")

    text, error = text_before_stream_error(
        gemini.chat.completions.create(model=MODEL, messages=ask("Tell me a story"), stream=True)
    )

    assert text == "Once upon"
    assert isinstance(error.body, dict)
    # The in-stream error object is OpenRouter's (`message`, `code`, optional `metadata`).
    assert error.body["code"] == 502
    assert error.message == error.body["message"]
    assert "overloaded" not in error.message
