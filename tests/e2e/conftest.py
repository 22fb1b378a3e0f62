"""Real `switchyard serve` processes, driven the way users drive them.

The gateway is the built binary named by $SWITCHYARD_BIN (scripts/test builds it and sets it), on a
config written here: the built-in mock provider, SQLite in a temporary directory, a free port
and an `admin_token` of its own (`Gateway.admin_token`, for the key-provisioning API).
`gateway` is one such process for the whole session; `start_gateway` starts more with extra config
tables, and `replaying_upstream` is a stand-in provider for them that replays recorded bodies and
streams (tests/fixtures/<provider>/), so each adapter's translation is checked through the SDK.
`translating_client` joins the two: an SDK client on a gateway whose one model is served by a
provider pointed at the replaying upstream. The plain helpers at the end (`ask`, `streamed_text`,
`reassembled_tool_calls`, `assert_openai_error`, ...) are what the provider tests share.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
import openai
from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# A free port can be taken by someone else between our probe and the server's bind; a few tries
# make that race harmless without fixed ports.
START_ATTEMPTS = 3
LOG_TAIL_LINES = 80
# Every gateway's calendar clock stands still here (`SWITCHYARD_PIN_CLOCK`), so limits, periods
# and expiry never depend on the day the suite runs; SWITCHYARD_TEST_NOW picks another instant.
PINNED_NOW = datetime.datetime.fromisoformat(
    os.environ.get("SWITCHYARD_TEST_NOW", "2026-06-10T12:00:00Z").replace("Z", "+00:00")
)

# The server's log, shown after a failing run: CI keeps no temporary files to look at later.
_server_logs: list[Path] = []


@dataclasses.dataclass(frozen=True)
class Gateway:
    port: int
    key: str
    log: Path
    # `[server] admin_token`, set on every gateway so the key-provisioning API can be driven.
    admin_token: str

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"


def _binary() -> Path:
    named = os.environ.get("SWITCHYARD_BIN")
    if named:
        path = Path(named)
    else:
        # Convenience for running pytest by hand after `cargo build`; scripts/test always sets it.
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "debug" / "switchyard"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"switchyard binary not found at {path}: build it (cargo build --bin switchyard) "
            "and set SWITCHYARD_BIN",
            returncode=2,
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_config(directory: Path, port: int, admin_token: str, extra: str) -> Path:
    config = directory / "switchyard.toml"
    db = directory / "switchyard.db"
    # A short keep-alive so a stream that stalls shows up within the tests' timeouts.
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
sse_keepalive = "1s"
admin_token = "{admin_token}"

[database]
url = "sqlite://{db}"

[[providers]]
id = "mock"
kind = "mock"

[[models]]
id = "switchyard/echo"
  [[models.endpoints]]
  provider = "mock"
  upstream = "echo"
  prompt = "1"
  completion = "2"
  max_output = 16384

{extra}
"""
    )
    return config


def _run(binary: Path, *args: str) -> str:
    done = subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        pytest.exit(
            f"`switchyard {' '.join(args)}` failed ({done.returncode}):\n{done.stderr}",
            returncode=3,
        )
    return done.stdout


def _ready(gateway: Gateway) -> bool:
    try:
        with urllib.request.urlopen(f"{gateway.root}/health/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"switchyard did not stop within {STOP_TIMEOUT_S}s of SIGTERM")


def _start(binary: Path, directory: Path, config: Path, port: int, key: str, admin_token: str):
    log = directory / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Debug logs, so the test that looks for leaked keys reads everything it could leak.
            env={
                **os.environ,
                "RUST_LOG": "debug,hyper=info,h2=info,sqlx=info",
                "SWITCHYARD_PIN_CLOCK": PINNED_NOW.isoformat(),
            },
        )
    gateway = Gateway(port=port, key=key, log=log, admin_token=admin_token)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None, gateway
        if _ready(gateway):
            return process, gateway
        time.sleep(0.05)
    _stop(process)
    pytest.exit(
        f"switchyard was not ready within {READY_TIMEOUT_S}s; its log:\n{log.read_text()}",
        returncode=3,
    )


def _launch(
    binary: Path, directory: Path, extra: str = ""
) -> tuple[subprocess.Popen[bytes], Gateway]:
    """A migrated, running gateway with a fresh key, on a config with `extra` tables appended."""
    admin_token = f"e2e-admin-{secrets.token_hex(16)}"
    config = _write_config(directory, _free_port(), admin_token, extra)
    _run(binary, "migrate", "--config", str(config))
    key = _run(binary, "keys", "create", "--name", "e2e", "--config", str(config)).strip()
    assert key.startswith("sk-sy-") and "\n" not in key, f"unexpected key output: {key!r}"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        config = _write_config(directory, port, admin_token, extra)
        process, gateway = _start(binary, directory, config, port, key, admin_token)
        if process is not None:
            break
    else:
        pytest.exit(
            f"switchyard exited before it was ready, {START_ATTEMPTS} times; its log:\n"
            f"{gateway.log.read_text()}",
            returncode=3,
        )
    _server_logs.append(gateway.log)
    return process, gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    process, gateway = _launch(_binary(), tmp_path_factory.mktemp("switchyard"))
    try:
        yield gateway
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Gateway]]:
    """Starts a gateway whose config adds the given TOML tables (`[[providers]]`, `[[models]]`) to
    the session gateway's; every one started is stopped at the end of the session."""
    binary = _binary()
    processes: list[subprocess.Popen[bytes]] = []

    def start(extra: str) -> Gateway:
        process, gateway = _launch(binary, tmp_path_factory.mktemp("switchyard"), extra)
        processes.append(process)
        return gateway

    try:
        yield start
    finally:
        for process in processes:
            _stop(process)


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    # Lower-cased names.
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ReplayingUpstream:
    """A provider stand-in on a free port: records every request and answers each with the reply
    set last, whole (an SSE body arrives in one piece, which the gateway must split itself)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._reply: tuple[int, dict[str, str], bytes] = (
            500,
            {"content-type": "text/plain"},
            b"no reply scripted",
        )
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                upstream.requests.append(RecordedRequest(self.command, self.path, headers, body))
                status, reply_headers, reply = upstream._reply
                self.send_response(status)
                for name, value in reply_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:{port}`, without a path."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def replay(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answers with `body`; `headers` are sent besides content-type and content-length."""
        self._reply = (status, {"content-type": content_type, **(headers or {})}, body)

    def replay_fixture(
        self, name: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """A file under tests/fixtures/ (`anthropic/stream_text.sse`); `.sse` is sent as a
        stream."""
        path = FIXTURES / name
        content_type = "text/event-stream" if path.suffix == ".sse" else "application/json"
        self.replay(path.read_bytes(), status, content_type, headers)

    def replay_event_stream(self, name: str) -> None:
        """A `.jsonl` file under tests/fixtures/ as an AWS event stream: each line,
        `{"event": type, "payload": ...}` or `{"exception": type, "payload": ...}`, becomes one
        binary message (tests/fixtures/bedrock/README.md)."""
        body = b"".join(
            event_stream_line(json.loads(line))
            for line in (FIXTURES / name).read_text().splitlines()
            if line.strip()
        )
        self.replay(body, content_type="application/vnd.amazon.eventstream")

    def last_request(self) -> RecordedRequest:
        assert self.requests, "the upstream received no request"
        return self.requests[-1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def event_stream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message in AWS's event-stream encoding: a prelude (total length, headers length, CRC32
    of those eight bytes), string-typed headers, the payload and a CRC32 of everything before it,
    all big-endian ("Event stream encoding", AWS Transcribe developer guide)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name
        encoded += struct.pack(">BH", 7, len(raw_value)) + raw_value  # 7: string
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_stream_line(line: dict[str, Any]) -> bytes:
    """A fixture line (`{"event"|"exception": type, "payload": ...}`) as the message AWS sends."""
    message_type = "event" if "event" in line else "exception"
    return event_stream_message(
        {
            ":message-type": message_type,
            f":{message_type}-type": line[message_type],
            ":content-type": "application/json",
        },
        json.dumps(line["payload"]).encode(),
    )


@pytest.fixture(scope="module")
def replaying_upstream() -> Iterator[ReplayingUpstream]:
    upstream = ReplayingUpstream()
    try:
        yield upstream
    finally:
        upstream.close()


def sdk_client(gateway: Gateway) -> OpenAI:
    # No retries: a retried request would hide the status the gateway really answered.
    return OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=15)


@pytest.fixture
def client(gateway: Gateway):
    with sdk_client(gateway) as c:
        yield c


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, for the characters used here
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


# The tests of a module replay errors one after another against one endpoint of one gateway; a
# breaker that stays open would turn the next test's answer into a 503, so it closes again at once.
REPLAY_HEALTH = '[health]\ncool_down = "1ms"\nmax_cool_down = "1ms"\n\n'


def provider_tables(
    provider: dict[str, Any], model: dict[str, Any], endpoint: dict[str, Any]
) -> str:
    """One `[[providers]]` table and one `[[models]]` table whose one endpoint is served by that
    provider, as config text. Values are TOML strings, integers, booleans or lists of them; prices
    are strings (`prompt = "3"`), as in switchyard.toml."""
    lines = ["[[providers]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in provider.items()]
    lines += ["", "[[models]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in model.items()]
    lines += ["  [[models.endpoints]]", f"  provider = {_toml_value(provider['id'])}"]
    lines += [f"  {key} = {_toml_value(value)}" for key, value in endpoint.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def translating_client(
    start_gateway: Callable[[str], Gateway],
) -> Iterator[Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], OpenAI]]:
    """`(provider, model, endpoint) -> OpenAI`: an SDK client on a new gateway whose config adds
    `provider_tables(provider, model, endpoint)`; the clients are closed with the module."""
    clients: list[OpenAI] = []

    def open_client(
        provider: dict[str, Any], model: dict[str, Any], endpoint: dict[str, Any]
    ) -> OpenAI:
        tables = REPLAY_HEALTH + provider_tables(provider, model, endpoint)
        client = sdk_client(start_gateway(tables))
        clients.append(client)
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            client.close()


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def streamed_text(chunks: Iterable[Any]) -> str:
    """The content deltas of streamed chunks, joined."""
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


def finish_reasons(chunks: Iterable[Any]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def text_before_stream_error(stream: Iterable[Any]) -> tuple[str, openai.APIError]:
    """Reads a stream the SDK must break off with an `APIError` (a chunk carrying `error`):
    the text streamed before it, and the error."""
    chunks: list[Any] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            chunks.append(chunk)
    return streamed_text(chunks), raised.value


def reassembled_tool_calls(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Tool call fragments from streamed chunks, joined the way SDK users do: by each call's
    index, concatenating ids, names and argument pieces."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
    return calls


# The contract's `type` for each status the provider tests provoke (src/error.rs).
_ERROR_TYPES = {
    400: "invalid_request_error",
    408: "timeout_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "upstream_error",
}


def assert_openai_error(error: openai.APIStatusError, status: int) -> dict[str, Any]:
    """`error` is the SDK's exception for `status`, read from OpenAI's error shape
    (`{"error": {"message", "type", "code"}}`); returns that `error` object."""
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict), f"the SDK found no error object in {error.response.text!r}"
    assert body["code"] == status
    assert body["type"] == _ERROR_TYPES[status]
    assert isinstance(body["message"], str) and body["message"]
    assert error.response.json() == {"error": body}
    return body



def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:
    if exitstatus == 0:
        return
    for log in _server_logs:
        if log.is_file():
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            terminalreporter.section(f"switchyard serve log (last {len(lines)} lines): {log}")
            terminalreporter.write_line("\n".join(lines))
