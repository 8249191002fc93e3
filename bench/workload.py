"""Chat-completion request bodies made locally, with controlled input and output lengths.

Prompts are drawn from simple English words that the project's tiny test model
tokenises one token per word (a leading space included), so a prompt of N words
is about N tokens; for real models it is a fair approximation too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from serve_app.tiny_model import WORDS


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload: its body and the lengths it was made for.

    `input_tokens` counts the message text only; the chat template adds its headers.
    """

    body: dict[str, Any]
    input_tokens: int
    output_tokens: int


def words(count: int, rng: random.Random) -> str:
    """`count` random words: about `count` tokens."""
    return " ".join(rng.choices(WORDS, k=max(count, 0)))


def chat_body(model: str, messages: list[dict[str, str]], output_tokens: int,
              stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions body that asks for exactly `output_tokens` tokens."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": output_tokens,
        # vLLM extension: generation never stops early, so output lengths are exact.
        "ignore_eos": True,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _spec(model: str, prompt: str, input_tokens: int, output_tokens: int, stream: bool,
          system: str | None = None) -> RequestSpec:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return RequestSpec(chat_body(model, messages, output_tokens, stream), input_tokens, output_tokens)


def fixed_lengths(model: str, count: int, input_tokens: int, output_tokens: int,
                  stream: bool, seed: int = 0) -> list[RequestSpec]:
    """`count` requests of the same input and output length, with different prompts."""
    rng = random.Random(seed)
    return [_spec(model, words(input_tokens, rng), input_tokens, output_tokens, stream)
            for _ in range(count)]


def _lognormal_length(rng: random.Random, median: float, sigma: float,
                      low: int, high: int) -> int:
    return min(max(round(rng.lognormvariate(math.log(median), sigma)), low), high)


def sharegpt_like(model: str, count: int, stream: bool, seed: int = 0,
                  input_median: int = 200, output_median: int = 150, sigma: float = 0.9,
                  max_input: int = 1024, max_output: int = 512) -> list[RequestSpec]:
    """A mix of lengths shaped like ShareGPT conversations: lognormal, long-tailed, seeded.

    The caps keep prompt + output inside a 2048-token context.
    """
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        input_tokens = _lognormal_length(rng, input_median, sigma, 4, max_input)
        output_tokens = _lognormal_length(rng, output_median, sigma, 1, max_output)
        specs.append(_spec(model, words(input_tokens, rng), input_tokens, output_tokens, stream))
    return specs


def shared_prefix(model: str, count: int, prefix_tokens: int, suffix_tokens: int,
                  output_tokens: int, stream: bool, seed: int = 0) -> list[RequestSpec]:
    """Requests that share one long system prompt and differ in a short user message,
    the pattern prefix caching serves."""
    rng = random.Random(seed)
    system = words(prefix_tokens, rng)
    return [_spec(model, words(suffix_tokens, rng), prefix_tokens + suffix_tokens,
                  output_tokens, stream, system=system)
            for _ in range(count)]


WORKLOADS = ("fixed", "sharegpt", "shared-prefix")


@dataclass(frozen=True)
class Workload:
    """A named workload and its sizes; the same seed gives every system the same requests."""

    kind: str = "fixed"
    requests: int = 256
    input_tokens: int = 128
    output_tokens: int = 64
    prefix_tokens: int = 1024
    """shared-prefix only: length of the shared system prompt (input_tokens is the suffix)."""
    stream: bool = True
    seed: int = 0

    def specs(self, model: str) -> list[RequestSpec]:
        if self.kind == "fixed":
            return fixed_lengths(model, self.requests, self.input_tokens, self.output_tokens,
                                 self.stream, self.seed)
        if self.kind == "sharegpt":
            return sharegpt_like(model, self.requests, self.stream, self.seed)
        if self.kind == "shared-prefix":
            return shared_prefix(model, self.requests, self.prefix_tokens, self.input_tokens,
                                 self.output_tokens, self.stream, self.seed)
        raise ValueError(f"unknown workload {self.kind!r}; known: {', '.join(WORKLOADS)}")
