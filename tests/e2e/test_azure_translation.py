"""The official OpenAI SDK reads Azure OpenAI answers through the gateway: a stand-in upstream
replays Azure's documented bodies and streams (tests/fixtures/azure/), content-filter results and
errors included, to a gateway whose `azure` provider points at it."""

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
)

MODEL = "contoso/gpt-4o-e2e"
DEPLOYMENT = "gpt-4o-prod"
API_VERSION = "2024-12-01-preview"
UPSTREAM_KEY = "azure-e2e-upstream-secret"
CHAT_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={API_VERSION}"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture(scope="module")
def azure(replaying_upstream: ReplayingUpstream, translating_client: Callable) -> OpenAI:
    return translating_client(
        {
            "id": "azure",
            "kind": "azure",
            "base_url": replaying_upstream.base_url,
            "api_version": API_VERSION,
            "api_key": UPSTREAM_KEY,
        },
        {"id": MODEL, "context_length": 128000},
        {
            "upstream": DEPLOYMENT,
            "prompt": "2.5",
            "completion": "10",
            "supports": ["tools", "tool_choice"],
        },
    )


def test_a_filtered_completion_parses_with_its_filter_results_usage_and_cost(
    azure: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("azure/chat_completion_filtered.json")

    completion = azure.chat.completions.create(model=MODEL, messages=ask("Say hello"))

    sent = replaying_upstream.last_request()
    assert (sent.method, sent.path) == ("POST", CHAT_PATH)
    assert sent.headers["api-key"] == UPSTREAM_KEY
    assert "authorization" not in sent.headers
    assert sent.json()["messages"] == ask("Say hello")

    assert completion.model == MODEL
    assert completion.model_dump()["provider"] == "azure"
    choice = completion.choices[0]
    assert choice.message.content == "The first part of the answer"
    assert choice.finish_reason == "content_filter"
    # Azure's extra fields survive the gateway and the SDK's parsing.
    assert choice.model_dump()["content_filter_results"]["violence"] == {
        "filtered": True,
        "severity": "medium",
    }
    prompt_filter = completion.model_dump()["prompt_filter_results"][0]
    assert prompt_filter["content_filter_results"]["jailbreak"]["detected"] is False
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 6, 18)
    # 12 in at $2.50 and 6 out at $10 per million.
    assert usage.model_dump()["cost"] == 0.00009


def test_a_stream_carries_the_prompt_filter_results_and_ends_with_usage_and_cost(
    azure: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("azure/chat_stream.sse")

    chunks = list(
        azure.chat.completions.create(
            model=MODEL,
            messages=ask("Say hello"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    sent = replaying_upstream.last_request()
    assert sent.path == CHAT_PATH
    assert sent.json()["stream"] is True
    assert sent.json()["stream_options"]["include_usage"] is True
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    filters = first.model_dump()["prompt_filter_results"][0]["content_filter_results"]
    assert filters["violence"]["filtered"] is False
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert streamed_text(chunks) == "Hello there."
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
    # 9 × 2.5 + 3 × 10 = 52.5 micro-USD, rounded half up.
    assert usage.model_dump()["cost"] == 0.000053


def test_a_streamed_tool_call_is_accumulated_by_the_sdks_stream_helper(
    azure: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("azure/chat_stream_tool_call.sse")

    with azure.chat.completions.stream(
        model=MODEL,
        messages=ask("Weather in Seattle?"),
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    assert replaying_upstream.last_request().json()["tools"] == [WEATHER_TOOL]
    expected = {"location": "Seattle, WA", "unit": "celsius"}
    pieces = [
        event.arguments_delta
        for event in events
        if event.type == "tool_calls.function.arguments.delta" and event.arguments_delta
    ]
    assert len(pieces) == 10
    (done,) = [event for event in events if event.type == "tool_calls.function.arguments.done"]
    assert (done.index, done.name) == (0, "get_weather")
    assert json.loads(done.arguments) == expected
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name) == ("call_AzW3atherPa1s", "get_weather")
    assert json.loads(call.function.arguments) == expected
    chunks = [event.chunk for event in events if event.type == "chunk"]
    assert reassembled_tool_calls(chunks) == {
        0: {"id": "call_AzW3atherPa1s", "name": "get_weather", "arguments": "".join(pieces)}
    }
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (84, 19)
    # 84 in at $2.50 and 19 out at $10 per million.
    assert final.usage.model_dump()["cost"] == 0.0004


def test_a_content_filter_rejection_raises_bad_request_error_with_azures_explanation(
    azure: OpenAI, replaying_upstream: ReplayingUpstream
) -> None:
    replaying_upstream.replay_fixture("azure/content_filter_error.json", status=400)

    with pytest.raises(openai.BadRequestError) as raised:
        azure.chat.completions.create(model=MODEL, messages=ask("Something filtered"))

    error = assert_openai_error(raised.value, 400)
    assert "content management policy" in error["message"]
    assert UPSTREAM_KEY not in raised.value.response.text


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_rate_limited_deployment_raises_rate_limit_error_with_retry_after(
    azure: OpenAI, replaying_upstream: ReplayingUpstream, stream: bool
) -> None:
    replaying_upstream.replay_fixture(
        "azure/rate_limit_error.json", status=429, headers={"retry-after": "6"}
    )

    with pytest.raises(openai.RateLimitError) as raised:
        azure.chat.completions.create(model=MODEL, messages=ask("Hello"), stream=stream)

    assert_openai_error(raised.value, 429)
    assert raised.value.response.headers["retry-after"] == "6"
    assert UPSTREAM_KEY not in raised.value.response.text
