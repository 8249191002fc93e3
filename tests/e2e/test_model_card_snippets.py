"""The model card's three client snippets work unchanged but for base URL and key."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.stack import API_KEY, Stack

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.mark.parametrize("stream", [False, True])
def test_python_openai_snippet(stack: Stack, stream: bool):
    from openai import OpenAI

    client = OpenAI(
    base_url = stack.base_url + "/v1",
    api_key = API_KEY
    )

    completion = client.chat.completions.create(
    model="tiny-llama",
    messages=[{"role":"user","content":"Write a limerick about the wonders of GPU computing."}],
    temperature=0.5,
    top_p=1,
    max_tokens=16,
    stream=stream
    )

    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in completion if chunk.choices)
    else:
        text = completion.choices[0].message.content
    assert text


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("stream", ["false", "true"])
def test_javascript_openai_snippet(stack: Stack, stream: str):
    assert (JS_DIR / "node_modules" / "openai").exists(), "run `make test` (npm install) first"
    result = subprocess.run(
        ["node", "snippet.mjs", stack.base_url + "/v1", API_KEY, "tiny-llama", stream],
        cwd=JS_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout


def curl(stack: Stack, stream: bool) -> subprocess.CompletedProcess:
    body = json.dumps({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Write a limerick about the wonders of GPU computing."}],
        "temperature": 0.5,
        "top_p": 1,
        "max_tokens": 16,
        "stream": stream,
    })
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", stack.base_url + "/v1/chat/completions",
         "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {API_KEY}",
         "-d", body],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_snippet_non_stream(stack: Stack):
    result = curl(stack, stream=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_snippet_stream(stack: Stack):
    result = curl(stack, stream=True)
    assert result.returncode == 0, result.stdout + result.stderr
    events = [event for event in result.stdout.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk"
