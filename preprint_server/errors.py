"""Errors the service raises for client mistakes; the app maps them to 4xx JSON answers."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status = 404


class Invalid(ServiceError):
    """A field's value is wrong in a way only the server can see (e.g. an unknown goal id)."""

    status = 422

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class TooLarge(ServiceError):
    status = 413
