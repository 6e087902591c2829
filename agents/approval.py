"""Human approval steps: a typed request goes out through ``interrupt()``, a typed
decision comes back through ``Command(resume=…)``.

An answer that does not parse is not an error of the run: the step asks again, with the
reason, so a person can correct it and nothing is lost.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApprovalRequest(BaseModel):
    """What a person is asked to approve (the interrupt value)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["approval"] = "approval"
    action: str
    """The action waiting for approval, e.g. ``issue_refund``."""
    summary: str
    """One line a person can decide on."""
    amount: float | None = None
    options: list[Literal["approve", "reject"]] = Field(default_factory=lambda: ["approve", "reject"])  # type: ignore[arg-type]
    error: str | None = None
    """Why the previous answer was not accepted, when it was not."""


class ApprovalDecision(BaseModel):
    """A person's answer (the resume value)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str = ""


def request_approval(request: ApprovalRequest) -> ApprovalDecision:
    """Pause the run until a valid decision arrives; return it."""
    payload = request.model_dump(exclude_none=True)
    while True:
        answer: Any = interrupt(payload)
        try:
            return ApprovalDecision.model_validate(answer)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in e.errors()
            )
            payload = {
                **request.model_dump(exclude_none=True),
                "error": f"answer not accepted ({problems})",
            }
