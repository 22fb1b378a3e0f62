"""The official OpenAI SDK reads Anthropic answers the gateway translated: a stand-in upstream
replays Anthropic's documented bodies and streams (tests/fixtures/anthropic/) to a gateway whose
`anthropic` provider points at it."""

from __future__ import annotations

import json
from typing import Callable

import pytest
from openai import OpenAI

from conftest import (
    ReplayingUpstream,
    ask,
    finish_reasons,
    reassembled_tool_calls,
    streamed_text,
)

MODEL = "anthropic/claude-e2e"
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"
UPSTREAM_KEY = "sk-ant-e2e-upstream"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture(scope="module")
def anthropic_client(replaying_upstream: ReplayingUpstream, translating_client: Callable) -> OpenAI:
    return translating_client(
        {
            "id": "anthropic",
            "kind": "anthropic",
            "base_url": replaying_upstream.base_url,
            "api_key": UPSTREAM_KEY,
        },
        {"id": MODEL, "context_length": 200000},
        {
            "upstream": UPSTREAM_MODEL,
            "prompt": "3",
            "completion": "15",
            "max_output": 8192,
            "supports": ["tools", "tool_choice"],
        },
    )


def test_a_translated_completion_parses_with_usage(
    anthropic_client: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("anthropic/response_text.json")

    completion = anthropic_client.chat.completions.create(
        model=MODEL, messages=ask("What is your name?")
    )

    sent = replaying_upstream.last_request()
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json()["model"] == UPSTREAM_MODEL
    assert sent.json()["max_tokens"] == 8192

    assert completion.id.startswith("gen-")
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hi! My name is Claude."
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2095, 503)
    assert completion.model_dump()["provider"] == "anthropic"


def test_a_translated_tool_call_parses_with_its_arguments(
    anthropic_client: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("anthropic/response_tool_use.json")

    completion = anthropic_client.chat.completions.create(
        model=MODEL, messages=ask("Weather in San Francisco?"), tools=[WEATHER_TOOL]
    )

    assert replaying_upstream.last_request().json()["tools"][0]["name"] == "get_weather"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}


def test_a_translated_stream_reassembles_text_and_a_streamed_tool_call(
    anthropic_client: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("anthropic/stream_tool_use.sse")

    stream = anthropic_client.chat.completions.create(
        model=MODEL,
        messages=ask("Weather in San Francisco?"),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert replaying_upstream.last_request().json()["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert streamed_text(chunks) == "Okay, let's check the weather for San Francisco, CA:"
    calls = reassembled_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    assert finish_reasons(chunks) == ["tool_calls"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (472, 89)
