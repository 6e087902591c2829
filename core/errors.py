"""Interlock's error hierarchy. Only ``api/errors.py`` turns these into HTTP responses.

```
InterlockError                 retryable?
├── ConfigurationError         no   — the service is set up wrong (bad REDIS_URL, old Redis, …)
├── Unauthenticated            no   — no API key, or one that is unknown or revoked
├── Forbidden                  no   — the key's roles do not allow this action
├── NotFound                   no   — unknown assistant, thread, run, checkpoint
├── Conflict                   no   — the request clashes with current state (busy thread,
│   │                                 nothing to resume, duplicate id)
│   └── FencedOut              no   — a worker lost ownership of its run and must stop
├── InvalidInput               no   — well-formed JSON that makes no sense for this resource
└── TransientError             yes  — a dependency failed in a way worth retrying
    └── LLMUnavailable         yes  — the model endpoint timed out, refused, answered 429/5xx
```
"""

from __future__ import annotations

from typing import Any, ClassVar


class InterlockError(Exception):
    """Base of every error Interlock raises on purpose."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigurationError(InterlockError):
    """The service cannot run as configured; the message says what to change."""


class Unauthenticated(InterlockError):
    """The request carries no valid API key."""


class Forbidden(InterlockError):
    """The caller is known but its roles do not allow the action."""


class NotFound(InterlockError):
    """The resource does not exist (or belongs to another tenant)."""


class Conflict(InterlockError):
    """The request is valid but clashes with the resource's current state."""


class FencedOut(Conflict):
    """The fence key no longer holds this writer's value: another worker owns the thread.

    Nothing was written. Not retryable: the lease is lost, the writer must stop.
    """


FENCE_CONFIG_KEY = "__interlock_fence__"
"""``config["configurable"][FENCE_CONFIG_KEY] = [fence_key, token]``: the run's owner
token, checked by every checkpoint write and every tool side effect."""


class InvalidInput(InterlockError):
    """The request is well-formed but its content is not acceptable."""


class TransientError(InterlockError):
    """A dependency failed; the same call may succeed later."""

    retryable = True


class LLMUnavailable(TransientError):
    """The LLM endpoint could not give a usable answer this time."""
