"""The API contract: the OpenAPI document says what the server does, and the server holds to it.

* `openapi`: FastAPI's document, corrected: a key is declared only where one is needed (writes;
  reads too on a private server), every error status an operation can answer is declared with the
  body it has (`errors.ErrorOut`), and the publish form's `metadata` part is the JSON it is.
* `JsonBodyCheck`: a JSON request body the document calls invalid gets a 422 before any handler
  sees it. The handlers validate with pydantic in lax mode, which takes `false` for 0.0 or "3" for
  3; checked against the document too, exactly what it calls valid gets through. (A body that
  pydantic refuses anyway goes on to the handler, whose 422 names the fields as it always has.)
* `allowed_methods`: the `Allow` header of a 405 lists every method of the path.

tests/server/test_api_contract.py runs schemathesis, with all its checks, against a live server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from preprint_server import schemas
from preprint_server.errors import ErrorOut

ANSWERS = {
    400: "the body cannot be parsed (not JSON, not UTF-8, a broken multipart form)",
    401: "no API key: send 'Authorization: Bearer <lab key>'",
    403: "the key is unknown or revoked, or the lab may not change this",
    404: "no such paper, goal, lab or file",
    413: "the request body or a file is larger than the server accepts",
    422: "a field is invalid: `fields` and `errors` name it",
    503: "the search index's standalone Chroma server does not answer: nothing was written; retry after "
         "`Retry-After` seconds",
}
# Operations that need the vector store (a standalone Chroma server may be away: 503)
NEEDS_VECTORS = {("/health", "get"), ("/api/search", "get"), ("/api/papers", "post")}
MAX_REPORTED_ERRORS = 20


def openapi(app: FastAPI, private: bool) -> dict:
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = doc.setdefault("components", {}).setdefault("schemas", {})
        # POST /api/papers reads its body itself (JSON or multipart); publish its schema here.
        for model in (schemas.PaperCreate, ErrorOut):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(schema.pop("$defs", {}))
            comps[model.__name__] = schema
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, not ours
            comps.pop(name, None)
        _document_validators(comps)
        form = doc["paths"]["/api/papers"]["post"]["requestBody"]["content"]["multipart/form-data"]
        form["schema"]["properties"]["metadata"] = {"$ref": "#/components/schemas/PaperCreate"}
        form["encoding"] = {"metadata": {"contentType": "application/json"}}  # the form part is JSON
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if (path, method) in NEEDS_VECTORS:
                    op["responses"]["503"] = {"description": ANSWERS[503]}
                _declare_answers(op, path, private)
        app.openapi_schema = doc
    return app.openapi_schema


def _declare_answers(op: dict, path: str, private: bool) -> None:
    """What an operation can answer, as it answers it: a key where one is required (writes, whose
    lab dependency declares it; reads when the server is private: deps.read_access checks the
    header itself, so a public server's reads declare none), and every error status with the
    `ErrorOut` body."""
    if private and path.startswith("/api/"):
        op.setdefault("security", [{"HTTPBearer": []}])
    statuses = set()
    if op.get("security"):
        statuses |= {401, 403}
    if "{" in path or "requestBody" in op:  # a path or a body names papers, goals, files
        statuses.add(404)
    if op.get("parameters"):
        statuses.add(422)
    if "requestBody" in op:
        statuses |= {400, 413, 422}
    for status in sorted(statuses):
        op["responses"][str(status)] = {"description": ANSWERS[status]}
    for status, answer in op["responses"].items():  # those the routes declare (409, ...) too
        if status >= "400":  # every error answer comes from the app's handlers: an ErrorOut
            answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


def _document_validators(comps: dict) -> None:
    """Say in the document what validators in schemas.py check, where JSON Schema can say it: a
    request the document calls valid must not get a 422. (Better declared on the models themselves:
    move these there when those classes are next changed.)"""
    scores = comps.get("ReviewCreate", {}).get("properties", {}).get("scores")
    if scores is not None:  # criterion names of 1-50 characters, scores within 0..10
        scores["propertyNames"] = {"minLength": 1, "maxLength": 50}
        scores["additionalProperties"] = {"type": "number", "minimum": 0, "maximum": 10}
    goal = comps.get("PaperCreate", {}).get("properties", {}).get("goal", {})
    for branch in goal.get("anyOf", []):  # ids are tokens (schemas.ID_PATTERN); "" names no goal
        if branch.get("type") == "string":
            branch["pattern"] = schemas.ID_PATTERN


def _path_pattern(template: str) -> re.Pattern:
    return re.compile("/".join("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/")))


def allowed_methods(doc: dict, path: str) -> list[str]:
    """The methods the document lists for `path`. Starlette's 405 names only those of the first
    route matching the path, and the reads and writes of one path live in different routers."""
    for template, ops in doc["paths"].items():
        if _path_pattern(template).fullmatch(path):
            return sorted(m.upper() for m in ops)
    return []


class JsonBodyCheck:
    """422 (an `ErrorOut`) for a JSON body that the document's schema for the operation rejects."""

    def __init__(self, app: ASGIApp, document: Callable[[], dict]):
        self.app, self.document = app, document
        self._ops: list[tuple[re.Pattern, dict]] | None = None
        self._validators: dict[tuple[str, str], object] = {}

    def _validator(self, path: str, method: str):
        from jsonschema import Draft202012Validator

        doc = self.document()
        if self._ops is None:
            self._ops = [(_path_pattern(t), dict(ops, template=t)) for t, ops in doc["paths"].items()]
        for pattern, ops in self._ops:
            if pattern.fullmatch(path):
                key = (ops["template"], method)
                if key not in self._validators:
                    body = ops.get(method.lower(), {}).get("requestBody", {}).get("content", {})
                    schema = body.get("application/json", {}).get("schema")
                    model = getattr(schemas, (schema or {}).get("$ref", "").rsplit("/", 1)[-1], None)
                    self._validators[key] = schema and (
                        Draft202012Validator({**schema, "components": doc["components"]}), model)
                return self._validators[key]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        checks = self._validator(scope["path"], scope["method"]) if media == b"application/json" else None
        if checks is None:
            return await self.app(scope, receive, send)
        messages, chunks = [], []
        while True:  # the whole body: BodyLimit, outside this, stops one over the limit
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            data = json.loads(b"".join(chunks))
        except ValueError:  # not JSON, not UTF-8: the handler answers that (400 or 422)
            data = _UNPARSED
        if data is not _UNPARSED and (errors := _violations(data, *checks)):
            return await _rejection(errors)(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


_UNPARSED = object()


def _violations(data, validator, model) -> list:
    """The document's objections to `data`, when the handler's model would accept it."""
    errors = list(validator.iter_errors(data))
    if errors and model is not None:
        try:
            model.model_validate(data)
        except ValidationError:
            return []  # the handler refuses it too, and says so in its own words
    return errors


def _rejection(errors: list) -> JSONResponse:
    out = []
    for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])[:MAX_REPORTED_ERRORS]:
        path = list(e.absolute_path)
        if e.validator == "required" and isinstance(e.instance, dict):
            path += [next((p for p in e.validator_value if p not in e.instance), "")]
        msg = e.message if len(e.message) <= 200 else e.message[:199] + "…"
        out.append({"field": ".".join(map(str, path)) or "body", "loc": ["body", *path], "msg": msg,
                    "type": f"schema.{e.validator}"})
    fields = list(dict.fromkeys(e["field"] for e in out))
    return JSONResponse({"detail": f"invalid fields: {', '.join(fields)}", "fields": fields, "errors": out}, 422)
