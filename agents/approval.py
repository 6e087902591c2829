"""Human approval steps: a typed request goes out through ``interrupt()``, a typed
decision comes back through ``Command(resume=…)``.

A graph declares an approval step with an :class:`ApprovalSpec`: what is being approved
(action, a summary and the details built from state), the options (``approve``,
``reject``, ``edit`` with a pydantic model of the editable fields), who may decide (a role,
or ``group:<name>``), a deadline and what happens when it passes. The service turns every
pending step into an approval (``/approvals``): it enforces the deadline, checks who
answers, and keeps the audit trail. The step itself only asks and validates.

An answer that does not parse is not an error of the run: the step asks again, with the
reason, so a person can correct it and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from langgraph.graph import StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Option = Literal["approve", "reject", "edit"]
Outcome = Literal["approve", "reject", "edit", "timeout"]

SPEC_METADATA_KEY = "interlock_approval"
"""Node metadata key under which :func:`add_approval` leaves the spec, so the service can
validate edits with the graph's own model before it resumes the run."""

ROUTES_METADATA_KEY = "interlock_approval_routes"
"""…and its routes, so the service can say where an answer leads."""


class ApprovalRequest(BaseModel):
    """What a person is asked to approve (the interrupt value)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["approval"] = "approval"
    action: str
    """The action waiting for approval, e.g. ``issue_refund``."""
    summary: str
    """One line a person can decide on."""
    amount: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    """The data a person needs to decide."""
    options: list[Option] = Field(default_factory=lambda: list[Option](["approve", "reject"]))
    edit_schema: dict[str, Any] | None = None
    """JSON schema of the fields an ``edit`` may change."""
    editable: dict[str, Any] | None = None
    """The current values of those fields."""
    assignee: str = "approver"
    """Who may decide: a role (``approver``, ``operator``, ``admin``) or ``group:<name>``."""
    deadline_s: float | None = None
    on_timeout: str = "reject"
    """``reject``, ``approve``, ``escalate``, or ``branch`` (the graph routes ``timeout``)."""
    escalate_to: str | None = None
    suggestion: dict[str, Any] | None = None
    """The model's suggestion and rationale, when a decision node asks for review."""
    error: str | None = None
    """Why the previous answer was not accepted, when it was not."""


class ApprovalDecision(BaseModel):
    """A person's answer (the resume value)."""

    model_config = ConfigDict(extra="forbid")

    decision: Outcome
    comment: str = ""
    edits: dict[str, Any] | None = None
    decided_by: str | None = None
    """Who answered (an API key's name and id), filled in by the service."""

    @model_validator(mode="after")
    def _edits_go_with_edit(self) -> ApprovalDecision:
        if self.decision == "edit" and not self.edits:
            raise ValueError("decision 'edit' needs 'edits'")
        if self.decision != "edit" and self.edits:
            raise ValueError("'edits' only go with decision 'edit'")
        return self


class ApprovalSpec(BaseModel):
    """An approval step, declared in a graph."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    """The node's name."""
    action: str
    summary: Callable[[Any], str]
    details: Callable[[Any], dict[str, Any]] | None = None
    amount: Callable[[Any], float | None] | None = None
    options: tuple[Option, ...] = ("approve", "reject")
    editable: type[BaseModel] | None = None
    """The fields an ``edit`` may change (needed when ``edit`` is an option)."""
    current: Callable[[Any], dict[str, Any]] | None = None
    """The editable fields' current values, from state."""
    assignee: str = "approver"
    deadline_s: float | None = None
    on_timeout: Literal["reject", "approve", "escalate", "branch"] = "reject"
    escalate_to: str | None = None
    """The group (``group:<name>``) or role that gets the approval when it escalates."""
    record_field: str = "approval"

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalSpec:
        if "edit" in self.options and self.editable is None:
            raise ValueError(f"approval {self.name}: option 'edit' needs an 'editable' model")
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError(f"approval {self.name}: on_timeout 'escalate' needs 'escalate_to'")
        if self.on_timeout != "reject" and self.deadline_s is None:
            raise ValueError(f"approval {self.name}: on_timeout needs a deadline_s")
        return self

    def request(self, state: Any) -> ApprovalRequest:
        return ApprovalRequest(
            action=self.action,
            summary=self.summary(state),
            amount=self.amount(state) if self.amount else None,
            details=self.details(state) if self.details else {},
            options=list(self.options),
            edit_schema=self.editable.model_json_schema() if self.editable else None,
            editable=self.current(state) if self.current else None,
            assignee=self.assignee,
            deadline_s=self.deadline_s,
            on_timeout=self.on_timeout,
            escalate_to=self.escalate_to,
        )

    def check(self, answer: Any) -> ApprovalDecision:
        """Validate an answer against the options and the editable model.

        Raises:
            ValueError: with a message a person can act on.
        """
        try:
            decision = ApprovalDecision.model_validate(answer)
        except ValidationError as e:
            raise ValueError(_problems(e)) from None
        if decision.decision not in (*self.options, "timeout"):
            raise ValueError(
                f"decision '{decision.decision}' is not an option here ({', '.join(self.options)})"
            )
        if decision.decision == "edit":
            assert self.editable is not None
            try:
                edited = self.editable.model_validate(decision.edits)
            except ValidationError as e:
                raise ValueError(f"edits: {_problems(e)}") from None
            decision = decision.model_copy(
                update={"edits": edited.model_dump(mode="json", exclude_unset=True)}
            )
        return decision


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in e.errors())


def ask(payload: dict[str, Any], check: Callable[[Any], ApprovalDecision]) -> ApprovalDecision:
    """Pause the run until an answer passes ``check``; ask again, with the reason, until then."""
    asked = payload
    while True:
        answer: Any = interrupt(asked)
        try:
            return check(answer)
        except ValueError as e:
            asked = {**payload, "error": f"answer not accepted ({e})"}


def approval_node(spec: ApprovalSpec) -> Any:
    async def node(state: Any) -> dict[str, Any]:
        decision = ask(spec.request(state).model_dump(exclude_none=True), spec.check)
        return {spec.record_field: decision.model_dump(mode="json")}

    node.__name__ = spec.name
    return node


def add_approval(
    builder: StateGraph[Any, Any, Any, Any], spec: ApprovalSpec, routes: Mapping[Outcome, str]
) -> None:
    """Add ``spec`` as a node routed by its outcome: ``routes`` maps ``approve``,
    ``reject``, ``edit`` and (with ``on_timeout="branch"``) ``timeout`` to nodes."""
    needed = set(spec.options) | ({"timeout"} if spec.on_timeout == "branch" else set())
    missing = needed - set(routes)
    if missing:
        raise ValueError(f"approval {spec.name}: no route for {sorted(missing)}")
    builder.add_node(
        spec.name, approval_node(spec), metadata={SPEC_METADATA_KEY: spec, ROUTES_METADATA_KEY: dict(routes)}
    )
    field = spec.record_field

    def route(state: Any) -> str:
        chosen = (state.get(field) if isinstance(state, Mapping) else getattr(state, field)) or {}
        decision = chosen.get("decision", "reject")
        if decision == "timeout" and spec.on_timeout in ("approve", "reject"):
            decision = spec.on_timeout
        return routes.get(decision, routes.get("reject", next(iter(routes.values()))))

    builder.add_conditional_edges(spec.name, route, sorted(set(routes.values())))


def request_approval(request: ApprovalRequest) -> ApprovalDecision:
    """Pause the run until a valid approve/reject decision arrives; return it (for steps
    written by hand rather than declared with :class:`ApprovalSpec`)."""

    def check(answer: Any) -> ApprovalDecision:
        try:
            decision = ApprovalDecision.model_validate(answer)
        except ValidationError as e:
            raise ValueError(_problems(e)) from None
        if decision.decision not in request.options:
            raise ValueError(
                f"decision '{decision.decision}' is not an option ({', '.join(request.options)})"
            )
        return decision

    return ask(request.model_dump(exclude_none=True), check)
