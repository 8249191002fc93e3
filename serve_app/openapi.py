"""The router's OpenAPI document, built from the same pydantic models that validate."""

from __future__ import annotations

from typing import Any

from serve_app.requests import ChatRequest, CompletionRequest

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}

ERROR_STATUSES = {
    "400": "Malformed JSON, invalid parameters, prompt longer than the context",
    "401": "Missing or invalid API key",
    "404": "Unknown model",
    "413": "Request body too large",
    "429": "Tenant rate or concurrency limit",
    "503": "Over capacity or no replica available (with Retry-After)",
}


def _errors() -> dict[str, Any]:
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {status: {"description": text, "content": ref} for status, text in ERROR_STATUSES.items()}


def _generation(summary: str, schema_name: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}},
            "responses": {
                "200": {"description": "The completion (JSON), or SSE chunks ending with `data: [DONE]`",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(),
            },
        }
    }


def _simple_get(summary: str, secured: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {
        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}}
    if secured:
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = _errors()["401"]
    else:
        operation["responses"]["503"] = _errors()["503"]
    return {"get": operation}


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for model in (ChatRequest, CompletionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "serve-app OpenAI-compatible API", "version": "1"},
        "paths": {
            "/v1/chat/completions": _generation("Create a chat completion", "ChatRequest"),
            "/v1/completions": _generation("Create a completion", "CompletionRequest"),
            "/v1/models": _simple_get("List models", secured=True),
            "/health": _simple_get("Liveness", secured=False),
            "/ready": _simple_get("Every model has a running replica", secured=False),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
