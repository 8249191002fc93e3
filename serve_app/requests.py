"""The request bodies the router accepts, validated before any engine work.

Types are strict (a string is not a number, a bool is not an int), ranges are
OpenAI's. Unknown top-level fields are accepted and passed on to the engine, as
vLLM does (that is how `extra_body` parameters such as `top_k` or `ignore_eos`
reach it); fields the engine does not know are ignored there.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
NEEDS_CONTENT = ("system", "developer", "user", "tool")  # as OpenAI: only assistant (and function) may omit it
Stop = Union[Annotated[str, Field(max_length=1024)], Annotated[list[str], Field(max_length=16)], None]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(_Body):
    type: Literal["text"]
    text: str


def _part_kind(part: Any) -> str:
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    return "text" if kind == "text" else "other"


ContentPart = Annotated[
    Union[Annotated[TextPart, Tag("text")], Annotated[dict[str, Any], Tag("other")]],
    Discriminator(_part_kind),
]


class Message(_Body):
    role: Role
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_where_required(self) -> Message:
        if self.content is None and self.role in NEEDS_CONTENT:
            raise PydanticCustomError("missing_content", "a {role} message needs 'content'", {"role": self.role})
        return self


class StreamOptions(_Body):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _Sampling(_Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=100_000)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def requested_output_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sequences(self) -> int:
        return self.n

    def prompt_chars(self) -> int:
        """Characters the chat template renders into the prompt: message text, the tool
        calls of earlier turns and the tool definitions (a tool-heavy request's prompt is
        mostly its schemas)."""
        chars = sum(_content_chars(message.content) + _json_chars((message.model_extra or {}).get("tool_calls"))
                    for message in self.messages)
        return chars + _json_chars((self.model_extra or {}).get("tools"))


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool | None = False

    def requested_output_tokens(self) -> int | None:
        return self.max_tokens

    def sequences(self) -> int:
        """`n` completions of each prompt in a batch."""
        batch = isinstance(self.prompt, list) and bool(self.prompt) and not isinstance(self.prompt[0], int)
        return self.n * (len(self.prompt) if batch else 1)

    def prompt_chars(self) -> int:
        if isinstance(self.prompt, str):
            return len(self.prompt)
        return sum(len(item) if isinstance(item, (str, list)) else 4 for item in self.prompt)


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"))) if value else 0


def _content_chars(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    return sum(len(part.text) if isinstance(part, TextPart) else 0 for part in content)


REQUEST_TYPES: dict[str, type[ChatRequest] | type[CompletionRequest]] = {
    "chat": ChatRequest,
    "completion": CompletionRequest,
}
