"""The fault tests' client: a request whose connection closed before any response may be
sent again only when the test allows it, and the report counts every such resend."""

from __future__ import annotations

import httpx

from tests.e2e.fault_load import Report, chat_body, request_once

URL = "http://router.test/v1/chat/completions"
COMPLETION = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}


def closing_then_answering(closes: int, error: Exception | None = None) -> httpx.AsyncClient:
    """A server that drops the first `closes` requests without a response, then answers."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= closes:
            raise error or httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json=COMPLETION)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_an_unanswered_request_is_dropped_unless_the_test_allows_a_reconnect():
    async with closing_then_answering(closes=1) as client:
        ended = await request_once(client, URL, chat_body("m", 5, stream=False), timeout_s=5)
    assert ended.outcome == "dropped" and ended.reconnects == 0


async def test_an_allowed_reconnect_completes_the_request_and_is_counted():
    async with closing_then_answering(closes=1) as client:
        ended = await request_once(client, URL, chat_body("m", 5, stream=False), timeout_s=5, reconnects=1)
    assert ended.outcome == "complete" and ended.reconnects == 1
    report = Report("rollout", [ended])
    assert report.reconnects == 1 and "reconnected=1" in report.line()


async def test_reconnects_stop_at_the_allowance():
    async with closing_then_answering(closes=3) as client:
        ended = await request_once(client, URL, chat_body("m", 5, stream=False), timeout_s=5, reconnects=2)
    assert ended.outcome == "dropped" and ended.reconnects == 2


async def test_a_connection_broken_otherwise_is_never_sent_again():
    refused = httpx.ConnectError("connection refused")
    async with closing_then_answering(closes=1, error=refused) as client:
        ended = await request_once(client, URL, chat_body("m", 5, stream=False), timeout_s=5, reconnects=1)
    assert ended.outcome == "dropped" and ended.reconnects == 0
