"""Keys, credits, cost and rate limits, driven as an operator and its users drive them: the admin
provisions keys over HTTP with `[server] admin_token`, users call with the official SDK.

Money is compared as `Decimal`: JSON bodies are parsed with `parse_float=Decimal` and the SDK's
floats go through `Decimal(str(x))`, so no binary float rounds what the gateway wrote exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any, Callable

import openai
import pytest
from openai import OpenAI

from conftest import PINNED_NOW, Gateway

MODEL = "switchyard/echo"
FREE_MODEL = "switchyard/gift:free"
PROMPT = "the quick brown fox jumps over the lazy dog"
# switchyard/echo's prices in conftest's config, USD per million tokens.
PROMPT_PRICE = Decimal("1")
COMPLETION_PRICE = Decimal("2")
MILLION = Decimal(1_000_000)
# Usage rows are written in batches just behind the request: poll for them, briefly.
SETTLE_TIMEOUT_S = 5.0
POLL_S = 0.05

# A model whose one endpoint charges nothing, so `switchyard/gift:free` can serve.
FREE_MODEL_TABLES = """
[[models]]
id = "switchyard/gift"
  [[models.endpoints]]
  provider = "mock"
  upstream = "echo"
  prompt = "0"
  completion = "0"
"""

# Every key the module mints, for the test that reads the server's log last.
_minted: list[str] = []


@pytest.fixture(scope="module")
def accounts(start_gateway: Callable[[str], Gateway]) -> Gateway:
    """A gateway of this module's own, so the admin's totals sum only keys made here."""
    return start_gateway(FREE_MODEL_TABLES)


@pytest.fixture(scope="module")
def limited(start_gateway: Callable[[str], Gateway]) -> Gateway:
    """A gateway whose keys may make two requests a minute (`[limits]`' default)."""
    return start_gateway("[limits]\nrequests_per_minute = 2\n")


def ask(text: str = PROMPT) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def usd(amount: Any) -> Decimal:
    """An amount from the SDK (a float) or from a body parsed with `parse_float=Decimal`."""
    return Decimal(str(amount))


def call(
    gateway: Gateway, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    """`method path` under /v1 with `token` as the bearer: the status and the JSON body."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{gateway.base_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read(), parse_float=Decimal)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read(), parse_float=Decimal)


def admin(gateway: Gateway, method: str, path: str, body: Any = None) -> Any:
    """An admin call that must succeed: its JSON body."""
    status, answer = call(gateway, method, path, gateway.admin_token, body)
    assert status in (200, 201), f"{method} {path}: {status} {answer}"
    return answer


def create_key(gateway: Gateway, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A new key through `POST /v1/keys`: the key itself and its object."""
    body = {"name": "e2e", **fields}
    status, answer = call(gateway, "POST", "/keys", gateway.admin_token, body)
    assert status == 201, answer
    key = answer["key"]
    _minted.append(key)
    return key, answer["data"]


def sdk(gateway: Gateway, key: str) -> OpenAI:
    # No retries: the SDK retries 429s by default, which would hide the refusal under test.
    return OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=15)


def statement(gateway: Gateway, key: str) -> dict[str, Any]:
    status, answer = call(gateway, "GET", "/key", key)
    assert status == 200, answer
    return answer["data"]


def settled(gateway: Gateway, key: str, usage: Decimal) -> dict[str, Any]:
    """`GET /v1/key` once the key's usage has reached `usage`: settlement runs behind requests."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        data = statement(gateway, key)
        if data["usage"] >= usage or time.monotonic() > deadline:
            assert data["usage"] == usage, f"usage never reached {usage}: {data}"
            return data
        time.sleep(POLL_S)


def assert_priced(usage: dict[str, Any]) -> Decimal:
    """`usage` (as a dict) carries `cost` and `cost_details` whose parts add up, exactly, to the
    list price of its tokens; returns the cost."""
    cost = usd(usage["cost"])
    details = usage["cost_details"]
    prompt = usd(details["upstream_inference_prompt_cost"])
    completions = usd(details["upstream_inference_completions_cost"])
    assert usd(details["upstream_inference_cost"]) == cost
    assert prompt + completions == cost
    assert prompt == usage["prompt_tokens"] * PROMPT_PRICE / MILLION
    assert completions == usage["completion_tokens"] * COMPLETION_PRICE / MILLION
    assert cost > 0
    return cost


def refusal(create: Callable[[], Any]) -> openai.RateLimitError | None:
    """The `RateLimitError` that `create()` raised, or None if it was admitted."""
    try:
        create()
    except openai.RateLimitError as error:
        return error
    return None


def test_a_key_created_by_the_admin_serves_the_sdk_and_reports_its_usage(
    accounts: Gateway,
) -> None:
    """The whole provisioning story: the admin mints a key, a user calls with it through the SDK,
    and both `GET /v1/key` and the admin's `GET /v1/keys/{hash}` show what was spent."""
    key, created = create_key(accounts, name="team-a", limit=25, limit_reset="daily")
    assert key.startswith("sk-sy-")
    assert created["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert created["name"] == "team-a"
    assert key.startswith(created["label"].rstrip("…"))
    assert key not in json.dumps(created, default=str), "the key object must not hold the key"
    assert created["disabled"] is False
    assert created["limit"] == 25 and created["limit_remaining"] == 25
    assert created["limit_reset"] == "daily"
    assert created["usage"] == 0

    with sdk(accounts, key) as client:
        completion = client.chat.completions.create(model=MODEL, messages=ask())
    assert completion.choices[0].message.content == PROMPT
    cost = usd(completion.model_dump()["usage"]["cost"])
    assert cost > 0

    mine = settled(accounts, key, cost)
    assert mine["hash"] == created["hash"]
    assert mine["label"] == created["label"]
    assert mine["limit"] == Decimal(25)
    assert mine["limit_remaining"] == Decimal(25) - cost
    # The gateway's clock is pinned: the request and the statement fall in the same day.
    assert mine["usage_daily"] == mine["usage_weekly"] == mine["usage_monthly"] == cost
    assert call(accounts, "GET", f"/keys/{created['hash']}", accounts.admin_token) == (
        200,
        {"data": mine},
    )
    listed = admin(accounts, "GET", "/keys")["data"]
    assert mine in listed


def test_the_provisioning_api_wants_the_admin_token_not_a_key(accounts: Gateway) -> None:
    """A key, a wrong token or none at all may not mint keys: each is a 401 in the error shape."""
    for token in (accounts.key, "not-the-admin-token", None):
        status, answer = call(accounts, "POST", "/keys", token, {"name": "intruder"})
        assert status == 401, (token, answer)
        assert answer["error"]["code"] == 401
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    names = [key["name"] for key in admin(accounts, "GET", "/keys?include_disabled=true")["data"]]
    assert "intruder" not in names


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": "1e3"},
        {"limit": -1},
        {"limit": "0.0000001"},
        {"limit_reset": "hourly"},
        {"expires_at": "tomorrow"},
        {"name": ""},
    ],
    ids=["exponent", "negative", "seven-decimals", "unknown-reset", "not-rfc3339", "empty-name"],
)
def test_a_key_with_an_invalid_field_is_a_400_and_is_not_created(
    accounts: Gateway, fields: dict[str, Any]
) -> None:
    """Limits are exact USD with at most six decimals: anything a float or a typo would blur is
    refused rather than guessed at."""
    before = admin(accounts, "GET", "/keys?include_disabled=true")["data"]
    body = {"name": "e2e", **fields}
    status, answer = call(accounts, "POST", "/keys", accounts.admin_token, body)
    assert status == 400, answer
    assert answer["error"]["code"] == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert admin(accounts, "GET", "/keys?include_disabled=true")["data"] == before


def test_an_expired_key_is_refused_with_401(accounts: Gateway) -> None:
    """`expires_at` in the past (any offset, stored in UTC) makes the key unusable at once."""
    key, created = create_key(accounts, expires_at="2020-01-01T00:00:00+02:00")
    assert created["expires_at"] == "2019-12-31T22:00:00Z"
    with sdk(accounts, key) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
    assert raised.value.status_code == 401
    assert call(accounts, "GET", "/key", key)[0] == 401


def test_a_limit_that_cannot_cover_max_tokens_is_a_402_and_a_small_max_tokens_is_served(
    accounts: Gateway,
) -> None:
    """The worst case (the endpoint's 16,384 output tokens at $2/M is $0.032768) is held before
    anything goes upstream; a $0.001 limit cannot hold it, but can hold eight tokens."""
    key, _ = create_key(accounts, limit="0.001")
    with sdk(accounts, key) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
        error = raised.value
        assert error.status_code == 402
        body = error.body
        assert isinstance(body, dict), error.response.text
        assert body["type"] == "insufficient_credits"
        assert body["code"] == 402
        assert isinstance(body["message"], str) and body["message"]
        assert error.response.json() == {"error": body}
        # The refusal is recorded, at no cost, under the id the response names.
        record = client.get(
            "/generation",
            cast_to=object,
            options={"params": {"id": error.response.headers["x-generation-id"]}},
        )["data"]
        assert record["status"] == 402
        assert usd(record["total_cost"]) == 0

        completion = client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=8)
    assert completion.choices[0].message.content == " ".join(PROMPT.split()[:8])
    assert completion.choices[0].finish_reason == "length"
    cost = usd(completion.model_dump()["usage"]["cost"])
    # Only the served request was charged: the refused one cost nothing.
    assert settled(accounts, key, cost)["limit_remaining"] == Decimal("0.001") - cost


def test_a_stream_the_limit_cannot_cover_is_refused_before_any_chunk(accounts: Gateway) -> None:
    """A stream is refused by status, like any request, so the SDK raises on `create`."""
    key, _ = create_key(accounts, limit="0.001")
    with sdk(accounts, key) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask(), stream=True)
    assert raised.value.status_code == 402
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == "insufficient_credits"


def test_raising_a_limit_with_patch_lets_the_refused_request_through(accounts: Gateway) -> None:
    """A limit changed by the admin holds from the key's next request on."""
    key, created = create_key(accounts, limit="0.001")
    with sdk(accounts, key) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
        assert raised.value.status_code == 402

        changed = admin(accounts, "PATCH", f"/keys/{created['hash']}", {"limit": 1})["data"]
        assert changed["limit"] == 1 and changed["limit_remaining"] == 1
        assert changed["updated_at"] is not None
        completion = client.chat.completions.create(model=MODEL, messages=ask())
    assert completion.choices[0].message.content == PROMPT


def test_lowering_a_limit_below_what_was_spent_leaves_nothing_remaining(
    accounts: Gateway,
) -> None:
    """`limit_remaining` never goes below zero, and a key with nothing left is refused even the
    smallest request."""
    key, created = create_key(accounts, limit=1)
    with sdk(accounts, key) as client:
        completion = client.chat.completions.create(model=MODEL, messages=ask())
        cost = usd(completion.model_dump()["usage"]["cost"])
        settled(accounts, key, cost)

        path = f"/keys/{created['hash']}"
        changed = admin(accounts, "PATCH", path, {"limit": "0.000001"})["data"]
        assert changed["limit"] == Decimal("0.000001")
        assert changed["limit_remaining"] == 0
        assert changed["usage"] == cost
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=1)
    assert raised.value.status_code == 402


def test_a_free_model_serves_a_key_whose_limit_is_zero(accounts: Gateway) -> None:
    """A request whose worst case is zero holds nothing, so even a spent-out key may ask for a
    `:free` model, and is charged nothing."""
    key, _ = create_key(accounts, limit=0)
    with sdk(accounts, key) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
        assert raised.value.status_code == 402
        completion = client.chat.completions.create(model=FREE_MODEL, messages=ask())
    assert completion.choices[0].message.content == PROMPT
    assert usd(completion.model_dump()["usage"]["cost"]) == 0


def test_a_completion_carries_its_cost_and_cost_details_that_add_up(accounts: Gateway) -> None:
    """OpenRouter's `cost_details` ride on `usage`; the prompt and completion parts are the list
    price of their tokens and sum exactly to `cost`."""
    key, _ = create_key(accounts)
    with sdk(accounts, key) as client:
        completion = client.chat.completions.create(model=MODEL, messages=ask())
    usage = completion.model_dump()["usage"]
    # The echo answers the prompt's nine words: 9 x $1/M + 9 x $2/M.
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (9, 9)
    assert assert_priced(usage) == Decimal("0.000027")


def test_the_final_usage_chunk_of_a_stream_carries_cost_and_cost_details(
    accounts: Gateway,
) -> None:
    """With `include_usage`, the stream's last chunk has the same priced `usage` as a completion,
    and it is what the key is charged."""
    key, _ = create_key(accounts)
    with sdk(accounts, key) as client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=ask(),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(chunk.usage is None for chunk in chunks[:-1])
    cost = assert_priced(last.model_dump()["usage"])
    settled(accounts, key, cost)


def test_a_disabled_key_is_refused_with_401_until_it_is_enabled_again(accounts: Gateway) -> None:
    """Disabling takes effect on the gateway's next request, and is undone the same way."""
    key, created = create_key(accounts)
    path = f"/keys/{created['hash']}"
    with sdk(accounts, key) as client:
        client.chat.completions.create(model=MODEL, messages=ask())

        assert admin(accounts, "PATCH", path, {"disabled": True})["data"]["disabled"] is True
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
        assert raised.value.status_code == 401
        assert isinstance(raised.value.body, dict) and raised.value.body["code"] == 401
        assert call(accounts, "GET", "/key", key)[0] == 401
        # Disabled keys are left out of the listing unless asked for.
        assert created["hash"] not in [k["hash"] for k in admin(accounts, "GET", "/keys")["data"]]
        everyone = admin(accounts, "GET", "/keys?include_disabled=true")["data"]
        assert created["hash"] in [k["hash"] for k in everyone]

        assert admin(accounts, "PATCH", path, {"disabled": False})["data"]["disabled"] is False
        completion = client.chat.completions.create(model=MODEL, messages=ask("back again"))
    assert completion.choices[0].message.content == "back again"


def test_a_deleted_key_is_refused_with_401_and_gone_from_the_admin_api(accounts: Gateway) -> None:
    """Deleting is final: the key stops working at once and its hash is unknown from then on."""
    key, created = create_key(accounts)
    path = f"/keys/{created['hash']}"
    with sdk(accounts, key) as client:
        client.chat.completions.create(model=MODEL, messages=ask())

        assert admin(accounts, "DELETE", path) == {"deleted": True}
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model=MODEL, messages=ask())
    assert raised.value.status_code == 401
    assert call(accounts, "GET", "/key", key)[0] == 401
    status, answer = call(accounts, "GET", path, accounts.admin_token)
    assert status == 404 and answer["error"]["code"] == 404
    assert call(accounts, "DELETE", path, accounts.admin_token)[0] == 404


def test_credits_are_the_key_limit_and_usage_or_for_the_admin_the_sums_over_keys(
    accounts: Gateway,
) -> None:
    """`GET /v1/credits` answers a key about itself, and the admin about every existing key
    (unlimited keys add no credits)."""
    key, _ = create_key(accounts, limit="2.5", limit_reset="monthly")
    with sdk(accounts, key) as client:
        completion = client.chat.completions.create(model=MODEL, messages=ask())
    cost = usd(completion.model_dump()["usage"]["cost"])
    settled(accounts, key, cost)
    assert call(accounts, "GET", "/credits", key) == (
        200,
        {"data": {"total_credits": Decimal("2.5"), "total_usage": cost}},
    )

    # Earlier tests' usage may still be settling: the totals must agree with the listing once
    # it has.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        keys = admin(accounts, "GET", "/keys?include_disabled=true")["data"]
        assert len(keys) < 100, "more keys than one page: sum the other pages too"
        expected = {
            "total_credits": sum((k["limit"] for k in keys if k["limit"] is not None), Decimal(0)),
            "total_usage": sum((k["usage"] for k in keys), Decimal(0)),
        }
        totals = admin(accounts, "GET", "/credits")["data"]
        if totals == expected or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert set(totals) == {"total_credits", "total_usage"}
    assert totals == expected


def test_the_third_request_in_a_minute_is_a_429_with_retry_after_and_rate_limit_headers(
    limited: Gateway,
) -> None:
    """`[limits] requests_per_minute = 2`: two are admitted with the headers counting down, the
    third raises `RateLimitError` with `Retry-After` and OpenRouter's `X-RateLimit-*`."""
    key, _ = create_key(limited)
    with sdk(limited, key) as client:
        admitted = [
            client.chat.completions.with_raw_response.create(model=MODEL, messages=ask())
            for _ in range(2)
        ]
        refused = refusal(lambda: client.chat.completions.create(model=MODEL, messages=ask()))

    assert refused is not None, "the third request in a minute was admitted"
    assert [raw.status_code for raw in admitted] == [200, 200]
    assert [raw.headers["x-ratelimit-limit"] for raw in admitted] == ["2", "2"]
    assert [raw.headers["x-ratelimit-remaining"] for raw in admitted] == ["1", "0"]

    assert refused.status_code == 429
    headers = refused.response.headers
    # The gateway's clock stands at PINNED_NOW: the window ends at the next whole minute.
    now = PINNED_NOW.timestamp()
    next_minute = (int(now) // 60 + 1) * 60
    assert int(headers["retry-after"]) == math.ceil(next_minute - now)
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) == next_minute * 1000, "milliseconds"
    assert "x-generation-id" not in headers
    body = refused.body
    assert isinstance(body, dict), refused.response.text
    assert body["code"] == 429
    assert body["type"] == "rate_limit_error"
    assert body["metadata"]["rate_limit"] == "requests_per_minute"
    assert body["message"].startswith("rate limit exceeded: 2 requests per minute")


def test_a_stream_over_the_rate_limit_raises_rate_limit_error_before_any_chunk(
    limited: Gateway,
) -> None:
    """The limit is checked before the stream starts, so the SDK raises on `create` rather than
    mid-iteration, with the same headers as a plain refusal, however often it is retried."""
    key, _ = create_key(limited)
    with sdk(limited, key) as client:
        for _ in range(2):
            client.chat.completions.create(model=MODEL, messages=ask())
        refusals = [
            refusal(
                lambda: client.chat.completions.create(model=MODEL, messages=ask(), stream=True)
            )
            for _ in range(2)
        ]
    assert all(refused is not None for refused in refusals), refusals
    for refused in refusals:
        headers = refused.response.headers
        assert refused.status_code == 429
        assert headers["content-type"].startswith("application/json")
        assert int(headers["retry-after"]) >= 1
        assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("2", "0")
    resets = {refused.response.headers["x-ratelimit-reset"] for refused in refusals}
    assert len(resets) == 1, "one window, one reset"


def test_each_key_is_counted_on_its_own(limited: Gateway) -> None:
    """Counts are per key: one key using up its minute leaves another's untouched."""
    first, _ = create_key(limited)
    second, _ = create_key(limited)
    with sdk(limited, first) as client:
        for _ in range(2):
            client.chat.completions.create(model=MODEL, messages=ask())
        refused = refusal(lambda: client.chat.completions.create(model=MODEL, messages=ask()))
    with sdk(limited, second) as client:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=ask())
    assert refused is not None, "the first key's third request was admitted"
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-remaining"] == "1"


# Named to run last in this file: it reads the logs the tests above made the servers write.
def test_zz_admin_tokens_and_minted_keys_never_appear_in_the_server_logs(
    accounts: Gateway, limited: Gateway
) -> None:
    assert _minted, "no key was minted"
    for gateway in (accounts, limited):
        log = gateway.log.read_text(errors="replace")
        assert gateway.admin_token not in log
        for key in _minted:
            assert key[len("sk-sy-") :] not in log
