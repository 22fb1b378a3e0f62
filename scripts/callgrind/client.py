"""Sends N non-streaming chat completions one after another on one keep-alive connection, as
the overhead bench's requests; fails on the first non-200 answer."""

import http.client
import json
import sys

port, key, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.dumps(
    {
        "model": "bench/fast",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": False,
    }
)
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    connection.request("POST", "/v1/chat/completions", body, headers)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}: {answer!r}")
