"""Errors of the preprint server package.

``PreprintServerError`` is the base of what a user can fix on the client side (the HTTP client's
errors, a local server that does not start); the agentlab CLI prints it as one line. ``ServiceError``
and its subclasses are raised inside the service for client mistakes (and `Unavailable` for a
service it depends on that does not answer); the app maps them to 4xx (503) JSON answers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PreprintServerError(Exception):
    """A user-fixable problem reaching or starting a preprint server; the message names cause and fix."""


class ServerStartError(PreprintServerError):
    """A local server (``preprint_server.serve``) did not start."""


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status = 404


class Forbidden(ServiceError):
    """The caller's lab may not change this (another lab's paper)."""

    status = 403


class Invalid(ServiceError):
    """A field's value is wrong in a way only the server can see (e.g. an unknown goal id)."""

    status = 422

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class TooLarge(ServiceError):
    status = 413


class Unavailable(ServiceError):
    """Something the server depends on does not answer (a standalone Chroma server): 503, retry later."""

    status = 503
    retry_after_s = 5


# -- what an error answer carries (the app's handlers build these; the OpenAPI document declares them) --
class FieldError(BaseModel):
    field: str = Field(description="dotted name of the field, or 'body'")
    loc: list[str | int] = Field(description="where the field is: ['query', 'k'], ['body', 'results', 0, 'n']")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'missing', 'value_error'")


class ErrorOut(BaseModel):
    """Every 4xx JSON answer: `detail` says what is wrong and how to fix it; a 422 also names the fields."""

    detail: str
    fields: list[str] | None = Field(None, description="the fields at fault (422)")
    errors: list[FieldError] | None = Field(None, description="one entry per problem (422 on request validation)")
