"""Hostile input never gets a 500 or a hang: always a clear OpenAI-shaped 4xx.

Unknown top-level fields are accepted and passed to the engine (documented in the
README): that is how OpenAI clients' `extra_body` parameters reach vLLM.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.router_doubles import API_KEY, FakeServer, router_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ALLOWED = {200, 400, 404, 413}
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(router_app(), raise_server_exceptions=True) as test_client:
        yield test_client


def assert_clean(response) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
chat_fields = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["m", "other", ""]) | json_values,
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "bad"]) | json_values,
                                                "content": st.text(max_size=30) | json_values}), max_size=3)
                | json_values,
    "max_tokens": st.integers(min_value=-10, max_value=10**30) | json_values,
    "temperature": st.floats(allow_nan=False, allow_infinity=False) | json_values,
    "top_p": st.floats(allow_nan=False, allow_infinity=False) | json_values,
    "n": st.integers(-3, 40) | json_values,
    "stream": st.booleans() | json_values,
    "stop": json_values,
})


@SLOW
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_cleanly(client, body):
    assert_clean(client.post("/v1/chat/completions", content=body, headers=AUTH))


@SLOW
@given(body=json_values)
def test_arbitrary_json_is_refused_cleanly(client, body):
    assert_clean(client.post("/v1/chat/completions", content=json.dumps(body), headers=AUTH))


@SLOW
@given(body=chat_fields)
def test_chat_shaped_bodies_are_answered_or_refused_cleanly(client, body):
    assert_clean(client.post("/v1/chat/completions", json=body, headers=AUTH))


@SLOW
@given(body=chat_fields)
def test_completion_shaped_bodies_are_answered_or_refused_cleanly(client, body):
    body = {**body, "prompt": body.pop("messages", "hi")}
    assert_clean(client.post("/v1/completions", json=body, headers=AUTH))


@pytest.mark.parametrize("body, param", [
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"', None),   # truncated
    (b"\xc3\x28\xa0\xa1", None),                                             # invalid UTF-8
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**400}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 513}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, "max_tokens"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
])
def test_known_bad_bodies_are_400_naming_the_parameter(client, body, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/v1/chat/completions", content=content, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_message_without_content_is_named_in_the_error(client):
    body = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user"}]}
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages.1: a user message needs 'content'"


def test_a_body_over_the_limit_is_413_before_it_is_read_whole(client):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100_000}]})
    response = client.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_many_messages_within_the_size_limit_are_accepted(client):
    messages = [{"role": "user", "content": "hi"}] * 2000
    response = client.post("/v1/chat/completions", json={"model": "m", "messages": messages}, headers=AUTH)
    assert response.status_code == 200


def test_unknown_fields_are_accepted_and_passed_to_the_engine():
    server = FakeServer()
    with TestClient(router_app(server=server)) as test_client:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 5, "ignore_eos": True}
        assert test_client.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    assert server.requests[-1].body["top_k"] == 5 and server.requests[-1].body["ignore_eos"] is True


def test_without_a_key_nothing_is_parsed(client):
    response = client.post("/v1/chat/completions", content=b"not even json")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_openapi_document_is_served_without_a_key(client):
    document = client.get("/openapi.json").json()
    assert set(document["paths"]) >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}


schema = schemathesis.openapi.from_asgi("/openapi.json", router_app())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint_honours_its_openapi_document(case):
    response = case.call(headers=AUTH)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
