"""Every failure Confab can report, as one tree.

    ConfabError
    ├── UserError                 the request was wrong; the person can fix it (HTTP 4xx)
    │   ├── BadRequest            malformed or invalid input
    │   ├── UnknownModel          no installed model by that name / kind
    │   ├── LimitExceeded         over a configured limit (which one, and the value)
    │   │   └── PromptTooLong
    │   ├── Unauthorized          missing or wrong API key
    │   └── BadMedia              audio or image that cannot be used
    │       └── BadImage          an image (said with a picture, not headphones)
    ├── EngineBusy                the queue (or your share of it) is full: retry_after seconds
    │   ├── UserQueueFull
    │   ├── RateLimited           too many requests this minute (per person or per API key)
    │   └── BudgetExhausted       today's GPU-seconds are used up
    ├── JobCancelled
    ├── JobTimeout
    └── InfrastructureError       our fault, not the person's (HTTP 5xx)
        ├── ModelDoesNotFit       no device has room for the model
        ├── BackendMissing        a library is not installed: says what to install
        └── BackendFailed         the library raised while running a job

Words for people live in `engine.messages`; errors carry the data those words need.
"""
from __future__ import annotations


class ConfabError(Exception):
    status = 500
    code = "internal_error"
    kind = "server_error"

    def __init__(self, message: str, **data):
        super().__init__(message)
        self.message = message
        self.data = data


class UserError(ConfabError):
    status = 400
    code = "invalid_request"
    kind = "invalid_request_error"


class BadRequest(UserError):
    def __init__(self, message: str, param: str | None = None, **data):
        super().__init__(message, param=param, **data)
        self.param = param


class UnknownModel(UserError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, kind: str | None = None, available: list[str] | None = None):
        self.model, self.model_kind, self.available = model, kind, available or []
        what = f"{kind} model" if kind else "model"
        hint = f" Installed: {', '.join(self.available)}." if self.available else ""
        super().__init__(f"The {what} '{model}' is not installed.{hint}", model=model, param="model")


class Gone(UserError):
    """What was asked for existed once and was removed (a picture past its keeping time)."""
    status = 410
    code = "gone"


class LimitExceeded(UserError):
    status = 400
    code = "limit_exceeded"

    def __init__(self, limit: str, value, maximum, unit: str = "", status: int | None = None,
                 param: str | None = None):
        self.limit, self.value, self.maximum, self.unit = limit, value, maximum, unit
        if status:
            self.status = status
        u = f" {unit}" if unit else ""
        super().__init__(f"{limit} is {value}{u}; the limit is {maximum}{u}.",
                         limit=limit, value=value, maximum=maximum, param=param)


class PromptTooLong(LimitExceeded):
    code = "context_length_exceeded"


class Unauthorized(UserError):
    status = 401
    code = "invalid_api_key"
    kind = "invalid_request_error"


class BadMedia(UserError):
    status = 400
    code = "invalid_media"


class BadImage(BadMedia):
    """An image that cannot be used (not an image, damaged, gone): BadMedia said of a picture."""


class EngineBusy(ConfabError):
    status = 429
    code = "queue_full"
    kind = "rate_limit_error"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message, retry_after=retry_after)
        self.retry_after = max(1.0, float(retry_after))


class UserQueueFull(EngineBusy):
    code = "user_queue_full"


class RateLimited(EngineBusy):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float, limit: str, maximum: int):
        super().__init__(message, retry_after)
        self.limit, self.maximum = limit, maximum
        self.data.update(limit=limit, maximum=maximum)


class BudgetExhausted(EngineBusy):
    code = "insufficient_quota"

    def __init__(self, message: str, retry_after: float, used_s: float, budget_s: float):
        super().__init__(message, retry_after)
        self.used_s, self.budget_s = used_s, budget_s
        self.data.update(used_s=used_s, budget_s=budget_s)


class JobCancelled(ConfabError):
    status = 499
    code = "cancelled"
    kind = "cancelled"

    def __init__(self, message: str = "The job was cancelled."):
        super().__init__(message)


class JobTimeout(ConfabError):
    status = 504
    code = "timeout"
    kind = "timeout"

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"The job took longer than its limit of {seconds:g} s and was stopped.")


class InfrastructureError(ConfabError):
    status = 500
    code = "internal_error"
    kind = "server_error"


class ModelDoesNotFit(InfrastructureError):
    status = 503
    code = "model_does_not_fit"

    def __init__(self, model: str, size: int, free: dict[str, int]):
        self.model, self.size, self.free = model, size, free
        room = ", ".join(f"{d}: {b / 2**20:.0f} MiB free" for d, b in free.items())
        super().__init__(
            f"The model '{model}' needs {size / 2**20:.0f} MiB and fits on no device ({room}).",
            model=model)


class BackendMissing(InfrastructureError):
    status = 503
    code = "backend_missing"

    def __init__(self, library: str, extra: str, detail: str = ""):
        self.library, self.extra = library, extra
        super().__init__(detail or f"{library} is not installed. Install it with: pip install "
                         f"'confab-bot[{extra}]'", library=library, extra=extra)


class BackendFailed(InfrastructureError):
    pass
