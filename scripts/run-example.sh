#!/bin/sh
# `make run`: start the local simulator the example config points at, then
# the gateway in the foreground. Ctrl-C stops both.
set -eu
cd "$(dirname "$0")/.."
build/mockllm --listen 127.0.0.1:8090 --models mock-gpt,mock-claude,mock-gemini >/dev/null &
mock=$!
trap 'kill $mock 2>/dev/null || true' EXIT INT TERM
# one that could not listen (the port taken) has said why on stderr and
# exited: stop here rather than serve a gateway whose every answer is a 502
sleep 0.3
if ! kill -0 "$mock" 2>/dev/null; then
    echo "make run: the simulator did not start (is 127.0.0.1:8090 in use?)" >&2
    exit 1
fi
echo "simulator (tools/mockllm) on 127.0.0.1:8090; gateway on 127.0.0.1:8080"
echo "try: curl -s localhost:8080/v1/chat/completions -d '{\"model\":\"mock-gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
build/keyless serve --config keyless.example.hujson
