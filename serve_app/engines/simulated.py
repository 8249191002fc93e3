"""A simulated engine: one GPU replica modelled in time and capacity, no model.

Chosen only by configuration (`engine: simulated`, never the default). It lets the
serving layer, admission and cluster behaviour be measured without paying for an
engine: the replica answers with vLLM's OpenAI wire format and keeps vLLM's
scheduling shape (continuous batching, FIFO admission, KV-cache reservation), with
step times taken from `ModelConfig.simulated`.

Parameters (`SimulatedEngineConfig`)
------------------------------------
prefill_tokens_per_s   prompt tokens the replica prefills per second.
decode_step_base_s     time of one decode step with a single running sequence.
decode_step_per_seq_s  extra decode-step time for each further running sequence.
max_batch              most sequences decoded together (vLLM's max_num_seqs).
kv_tokens              KV-cache capacity in tokens. A sequence reserves
                       prompt + max_tokens of it when it is admitted and returns
                       it when it finishes or is aborted.
startup_s              time `start()` takes before the replica can serve.
max_model_len          context length: prompt + max_tokens must fit in it.

How they combine
----------------
The scheduler runs one step after another while there is work. A step first
admits waiting sequences in order of their `EngineRequest.priority`, then arrival
(vLLM's priority policy, which our vLLM engines use), while the batch has fewer than
`max_batch` sequences and the head of the queue fits in the free KV cache (a head
that does not fit blocks the ones behind it). Then::

    step_s = (prompt tokens of the sequences admitted in this step) / prefill_tokens_per_s
             + decode_step_base_s + decode_step_per_seq_s * (running - 1)

and when the step's time has passed every running sequence, the newly admitted
included, has one more token. So for a request that arrives at an idle replica

    TTFT = prompt_tokens / prefill_tokens_per_s + decode_step_base_s

and at saturation the replica produces
`max_batch / (decode_step_base_s + decode_step_per_seq_s * (max_batch - 1))`
tokens per second. Prefill is not chunked: admissions lengthen the step of every
running sequence, as a prefill stall does. Step deadlines are kept on the loop's
clock (`loop.time()`), so a late wake-up is caught up by the following steps
instead of slowing the simulated GPU down; after an idle period the clock restarts.

Requests
--------
* Prompt tokens: `request.prompt_tokens_hint` when positive, otherwise an
  estimate: chat = ceil(characters of all message contents / 4) + 4 per message;
  completion = ceil(prompt characters / 4) (a prompt of token ids counts its ids).
  At least 1.
* `max_tokens` is `max_completion_tokens` or `max_tokens` from the body, else
  `limits.output_tokens_when_unset`. Generation ignores EOS: every sequence
  produces exactly `max_tokens` tokens and finishes with `finish_reason: "length"`.
* Refused with status 400 and an OpenAI-shaped body
  `{"error": {"message", "type": "BadRequestError", "param", "code": 400}}`:
  prompt + max_tokens > max_model_len (param "messages" / "prompt"), a sequence
  that could never fit the KV cache, `n` other than 1 (the simulated engine
  generates exactly one choice per request), and a batch of several prompts.
* Sampling parameters, `logprobs`, `echo`, tools and
  `stream_options.continuous_usage_stats` are accepted and ignored.

Output is the word list `WORDS` cycled, one word per token, framed exactly as
vLLM's OpenAI server frames it (chunks with `exclude_unset`, final usage chunk
with `choices: []`, non-streamed documents with every field vLLM dumps).
The first chat chunk (`delta: {"role": "assistant", "content": ""}`) is sent
together with the first token, as vLLM does; the last token's chunk carries
`finish_reason: "length"`.

Ending
------
Closing a stream body early (`aclose()`, cancelling the task awaiting it, or
dropping it) aborts the sequence: it leaves the queue or the batch and frees its
KV cache. A non-streamed request waits inside `handle()` (its status is known only
at the end, as with vLLM); cancelling that call aborts the sequence.

`shutdown()` stops the scheduler and ends every open request: a stream ends with
`data: {"error": {... "code": 503}}` then `data: [DONE]`; a non-streamed request
waiting in `handle()` gets a 503 reply with the same error document; `handle()`
after shutdown answers 503 at once. If the scheduler task dies of an error,
streams end the same way with a 500 error event, waiting non-streamed calls and
new calls raise `EngineDead`, and `check_health()` raises `EngineDead` (it also does
after shutdown).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from serve_app.config import ModelConfig
from serve_app.errors import context_code, error_body
from serve_app.engines.base import EngineDead, Reply
from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest, EngineStats, ReplyHead
from serve_app.usage import client_wants_usage

WORDS: tuple[str, ...] = (
    " lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit",
)
"""Generated text: token i is WORDS[i % len(WORDS)]."""

_WORD_JSON: tuple[bytes, ...] = tuple(json.dumps(word).encode() for word in WORDS)
_DONE = b"data: [DONE]\n\n"
_MARK = "\x00sim-token\x00"  # placeholder cut out of a pre-encoded chunk

# Sequence states.
_WAITING, _RUNNING, _FINISHED, _ABORTED, _FAILED = range(5)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _error_doc(status: int, message: str, err_type: str, param: str | None = None) -> dict:
    # err_type names the failure for logs; clients get the project's one error shape.
    return error_body(message, status, param=param, code=context_code(message))


def _error_reply(status: int, message: str, err_type: str, param: str | None = None) -> Reply:
    payload = _dumps(_error_doc(status, message, err_type, param))
    return Reply(ReplyHead(status=status, stream=False), _once(payload))


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


def _text(tokens: int) -> str:
    whole, rest = divmod(tokens, len(WORDS))
    return "".join(WORDS) * whole + "".join(WORDS[:rest])


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: count the text ones
        return sum(len(part.get("text") or "") for part in content
                   if isinstance(part, dict) and isinstance(part.get("text"), str))
    return 0


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def _estimate_prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty list", "messages")
        chars = sum(_content_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return max(1, math.ceil(chars / 4) + 4 * len(messages))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one prompt
    if isinstance(prompt, str):
        return max(1, math.ceil(len(prompt) / 4))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise _BadRequest("the simulated engine serves one prompt per request, not a batch",
                          "prompt")
    raise _BadRequest("'prompt' must be a string or a list of token ids", "prompt")


class _Seq:
    """One request in the simulated engine."""

    __slots__ = ("prompt_tokens", "max_tokens", "kv", "stream", "generated", "state",
                 "waiter", "error")

    def __init__(self, prompt_tokens: int, max_tokens: int, stream: bool) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.kv = prompt_tokens + max_tokens
        self.stream = stream  # streams are woken every token, others only at the end
        self.generated = 0
        self.state = _WAITING
        self.waiter: asyncio.Future | None = None
        self.error: tuple[int, str, str] | None = None  # (status, type, message)


def _wake(seq: _Seq) -> None:
    waiter = seq.waiter
    if waiter is not None:
        seq.waiter = None
        if not waiter.done():
            waiter.set_result(None)


class SimulatedEngine:
    """The Engine protocol over a timing-and-capacity model of one GPU replica."""

    def __init__(self, model: ModelConfig) -> None:
        self._name = model.name
        self._sim = model.simulated
        self._default_max_tokens = model.limits.output_tokens_when_unset
        self._waiting: list[tuple[int, int, _Seq]] = []  # a heap by (priority, arrival); aborted
        self._arrivals = itertools.count()  # entries are skipped lazily
        self._num_waiting = 0
        self._running: dict[_Seq, None] = {}  # insertion-ordered set
        self._kv_reserved = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._failure: BaseException | None = None

    # ----------------------------------------------------------------- protocol

    async def start(self) -> None:
        if self._task is not None or self._closed:
            return
        if self._sim.startup_s > 0:
            await asyncio.sleep(self._sim.startup_s)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"simulated-engine:{self._name}")
            self._task.add_done_callback(self._loop_done)

    async def handle(self, request: EngineRequest) -> Reply:
        if self._failure is not None:
            raise EngineDead(f"simulated engine scheduler died: {self._failure!r}")
        if self._closed:
            return _error_reply(503, "The engine is shutting down.", "ServiceUnavailableError")
        body = request.body
        chat = request.endpoint == "chat"
        try:
            prompt_tokens, max_tokens = self._admissible(request)
        except _BadRequest as bad:
            return _error_reply(400, str(bad), "BadRequestError", bad.param)

        stream = bool(body.get("stream"))
        seq = _Seq(prompt_tokens, max_tokens, stream)
        heapq.heappush(self._waiting, (request.priority, next(self._arrivals), seq))
        self._num_waiting += 1
        self._wakeup.set()

        created = int(time.time())
        rid = ("chatcmpl-" if chat else "cmpl-") + request.request_id
        if stream:
            return Reply(ReplyHead(status=200, stream=True),
                         _StreamBody(self, seq, chat, rid, created, client_wants_usage(body.get("stream_options"))))

        try:
            while seq.state < _FINISHED:
                seq.waiter = asyncio.get_running_loop().create_future()
                await seq.waiter
        except BaseException:
            self._abort(seq)
            raise
        if seq.state != _FINISHED:
            assert seq.error is not None
            status, err_type, message = seq.error
            if status != 503:
                raise EngineDead(message)
            return _error_reply(status, message, err_type)
        return Reply(ReplyHead(status=200, stream=False),
                     _once(_dumps(self._document(chat, rid, created, seq))))

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineDead(f"simulated engine scheduler died: {self._failure!r}")
        if self._closed:
            raise EngineDead("simulated engine is shut down")
        if self._task is not None and self._task.done():
            raise EngineDead("simulated engine scheduler has stopped")

    def stats(self) -> EngineStats:
        sim = self._sim
        return EngineStats(
            running=len(self._running),
            waiting=self._num_waiting,
            kv_usage=self._kv_reserved / sim.kv_tokens,
            kv_capacity_tokens=sim.kv_tokens,
            max_num_seqs=sim.max_batch,
            max_model_len=sim.max_model_len,
        )

    async def shutdown(self) -> None:
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._fail_all(503, "ServiceUnavailableError", "The engine is shutting down.")

    # ---------------------------------------------------------------- requests

    def _admissible(self, request: EngineRequest) -> tuple[int, int]:
        body = request.body
        chat = request.endpoint == "chat"
        n = body.get("n")
        if n is not None and n != 1:
            raise _BadRequest(
                f"n={n} is not supported: the simulated engine generates exactly one "
                "choice per request (n must be 1).", "n")
        max_tokens = (body.get("max_completion_tokens") if chat else None) or body.get("max_tokens")
        if max_tokens is None:
            max_tokens = self._default_max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _BadRequest(f"max_tokens must be a positive integer, got {max_tokens!r}.",
                              "max_tokens")
        hint = request.prompt_tokens_hint
        prompt_tokens = hint if hint > 0 else _estimate_prompt_tokens(request.endpoint, body)
        what = "messages" if chat else "prompt"
        limit = self._sim.max_model_len
        if prompt_tokens >= limit:
            raise _BadRequest(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"{what} contains at least {prompt_tokens} input tokens, which exceeds this "
                f"limit even without any output tokens. Please reduce the length of the "
                f"{what}.", what)
        max_tokens = min(max_tokens, limit - prompt_tokens)  # vLLM shortens, as here
        if prompt_tokens + max_tokens > self._sim.kv_tokens:
            raise _BadRequest(
                f"This request needs {prompt_tokens + max_tokens} tokens of KV cache "
                f"({prompt_tokens} in the {what}, {max_tokens} in the completion) but the "
                f"replica holds only {self._sim.kv_tokens}. Please reduce the length of the "
                f"{what} or completion.", what)
        return prompt_tokens, max_tokens

    def _document(self, chat: bool, rid: str, created: int, seq: _Seq) -> dict[str, Any]:
        """The non-streamed response, with the fields and order vLLM's server dumps."""
        text = _text(seq.generated)
        usage = {"prompt_tokens": seq.prompt_tokens,
                 "total_tokens": seq.prompt_tokens + seq.generated,
                 "completion_tokens": seq.generated,
                 "prompt_tokens_details": None, "completion_tokens_details": None}
        if chat:
            choice = {"index": 0,
                      "message": {"role": "assistant", "content": text, "refusal": None,
                                  "annotations": None, "audio": None, "function_call": None,
                                  "reasoning": None},
                      "logprobs": None, "finish_reason": "length", "stop_reason": None,
                      "token_ids": None, "routed_experts": None}
            return {"id": rid, "object": "chat.completion", "created": created,
                    "model": self._name, "choices": [choice], "service_tier": None,
                    "system_fingerprint": None, "usage": usage, "prompt_logprobs": None,
                    "prompt_token_ids": None, "prompt_text": None, "kv_transfer_params": None,
                    "ec_transfer_params": None, "metrics": None}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                  "stop_reason": None, "token_ids": None, "prompt_logprobs": None,
                  "prompt_token_ids": None, "routed_experts": None}
        return {"id": rid, "object": "text_completion", "created": created,
                "model": self._name, "choices": [choice], "service_tier": None,
                "system_fingerprint": None, "usage": usage, "kv_transfer_params": None,
                "ec_transfer_params": None, "metrics": None}

    def _abort(self, seq: _Seq) -> None:
        """Take a sequence out of the queue or the batch and free its KV; idempotent."""
        if seq.state == _WAITING:
            seq.state = _ABORTED
            self._num_waiting -= 1
        elif seq.state == _RUNNING:
            seq.state = _ABORTED
            del self._running[seq]
            self._kv_reserved -= seq.kv
        _wake(seq)

    def _fail_all(self, status: int, err_type: str, message: str) -> None:
        for seq in (*(entry[-1] for entry in self._waiting), *self._running):
            if seq.state in (_WAITING, _RUNNING):
                seq.state = _FAILED
                seq.error = (status, err_type, message)
                _wake(seq)
        self._waiting.clear()
        self._running.clear()
        self._num_waiting = 0
        self._kv_reserved = 0

    # --------------------------------------------------------------- scheduler

    def _loop_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            error = RuntimeError("scheduler loop returned")
        self._failure = error
        self._fail_all(500, "InternalServerError", f"The simulated engine failed: {error!r}")

    def _admit(self) -> int:
        """Move waiting sequences into the batch (by priority, then arrival); return their
        prompt tokens."""
        waiting, running = self._waiting, self._running
        max_batch, capacity = self._sim.max_batch, self._sim.kv_tokens
        prefill = 0
        while waiting:
            seq = waiting[0][-1]
            if seq.state != _WAITING:  # aborted while queued
                heapq.heappop(waiting)
                continue
            if len(running) >= max_batch or self._kv_reserved + seq.kv > capacity:
                break
            heapq.heappop(waiting)
            self._num_waiting -= 1
            seq.state = _RUNNING
            running[seq] = None
            self._kv_reserved += seq.kv
            prefill += seq.prompt_tokens
        return prefill

    def _advance(self) -> None:
        """The step's time has passed: every running sequence gets one token."""
        finished = []
        for seq in self._running:
            seq.generated += 1
            if seq.generated >= seq.max_tokens:
                finished.append(seq)
            elif seq.stream:
                _wake(seq)
        for seq in finished:
            del self._running[seq]
            self._kv_reserved -= seq.kv
            seq.state = _FINISHED
            _wake(seq)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sim = self._sim
        prefill_rate = sim.prefill_tokens_per_s
        base, per_seq = sim.decode_step_base_s, sim.decode_step_per_seq_s
        deadline = loop.time()
        while True:
            if not self._running and not self._num_waiting:
                self._wakeup.clear()
                await self._wakeup.wait()  # idle: no timers, no CPU
                deadline = loop.time()
            prefill = self._admit()
            running = len(self._running)
            if running == 0:
                # handle() refuses sequences larger than the KV cache, so with an
                # empty batch the head of the queue always fits.
                if self._num_waiting:
                    raise RuntimeError("no waiting sequence can be admitted to an empty batch")
                continue
            deadline += prefill / prefill_rate + base + per_seq * (running - 1)
            if deadline > loop.time():
                step_done = loop.create_future()
                timer = loop.call_at(deadline, _resolve, step_done)
                try:
                    await step_done
                finally:
                    timer.cancel()
            else:
                await asyncio.sleep(0)  # behind schedule: catch up, but let others run
            self._advance()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _StreamBody:
    """SSE frames of one streamed request, produced as the scheduler emits tokens.

    An async iterator rather than an async generator so that closing it before
    the first frame (or dropping it) still aborts the sequence.
    """

    __slots__ = ("_engine", "_seq", "_loop", "_chat", "_emitted", "_role_sent", "_tail",
                 "_done", "_prefix", "_suffix", "_rid", "_created", "_usage")

    def __init__(self, engine: SimulatedEngine, seq: _Seq, chat: bool, rid: str,
                 created: int, usage: bool) -> None:
        self._engine = engine
        self._seq = seq
        self._loop = asyncio.get_running_loop()
        self._chat = chat
        self._rid = rid
        self._created = created
        self._usage = usage
        self._emitted = 0
        self._role_sent = not chat
        self._tail: list[bytes | Usage] | None = None
        self._done = False
        # Every token chunk but the last is prefix + json(word) + suffix.
        frame = _sse(self._chunk(_MARK, None))
        self._prefix, _, self._suffix = frame.rpartition(json.dumps(_MARK).encode())

    def _chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        if self._chat:
            choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None,
                                      "finish_reason": finish}
            if finish is not None:
                choice["stop_reason"] = None
            choice["token_ids"] = None
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None, "prompt_token_ids": None, "token_ids": None}
            obj = "text_completion"
        return {"id": self._rid, "object": obj, "created": self._created,
                "model": self._engine._name, "choices": [choice]}

    def _head(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self._chat else "text_completion"
        return {"id": self._rid, "object": obj,
                "created": self._created, "model": self._engine._name}

    def __aiter__(self) -> _StreamBody:
        return self

    async def __anext__(self) -> bytes | Usage:
        seq = self._seq
        while True:
            if self._done:
                raise StopAsyncIteration
            emitted = self._emitted
            if emitted < seq.generated:
                if not self._role_sent:  # vLLM sends the role with the first output
                    self._role_sent = True
                    head = self._head()
                    head["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]
                    return _sse(head)
                self._emitted = emitted + 1
                word = emitted % len(WORDS)
                if self._emitted == seq.max_tokens:
                    return _sse(self._chunk(WORDS[word], "length"))
                return self._prefix + _WORD_JSON[word] + self._suffix
            tail = self._tail
            if tail is None:
                state = seq.state
                if state == _FINISHED:
                    tail = self._tail = []
                    if self._usage:
                        usage = self._head()
                        usage["choices"] = []
                        usage["usage"] = {"prompt_tokens": seq.prompt_tokens,
                                          "total_tokens": seq.prompt_tokens + seq.generated,
                                          "completion_tokens": seq.generated}
                        tail.append(_sse(usage))
                    tail += [_DONE, Usage(seq.prompt_tokens, seq.generated)]
                elif state == _FAILED:
                    status, err_type, message = seq.error
                    tail = self._tail = [_sse(_error_doc(status, message, err_type)), _DONE]
                elif state == _ABORTED:
                    self._done = True
                    raise StopAsyncIteration
            if tail is not None:
                frame = tail.pop(0)
                if not tail:
                    self._done = True
                return frame
            waiter = self._loop.create_future()
            seq.waiter = waiter
            try:
                await waiter
            except BaseException:  # the consumer was cancelled: the client is gone
                self._close()
                raise

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._engine._abort(self._seq)

    async def aclose(self) -> None:
        self._close()

    def __del__(self) -> None:
        try:
            if not self._done and self._seq.state in (_WAITING, _RUNNING):
                self._loop.call_soon_threadsafe(self._engine._abort, self._seq)
        except (AttributeError, RuntimeError):  # half-built, or the loop is closed
            pass
