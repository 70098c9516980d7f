"""Service-layer errors. The API maps them to HTTP; the UI shows their message in a toast."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotAuthenticated(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class TooManyRequests(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class FieldError(ServiceError):
    """Validation failure tied to one input field (422, FastAPI's error shape)."""

    status_code = 422

    def __init__(self, field: str, message: str, where: str = "body"):
        super().__init__(message)
        self.field = field
        self.where = where

    def detail(self) -> list[dict]:
        return [{"loc": [self.where, self.field], "msg": self.message, "type": "value_error"}]
