"""Fuzz every route of the OpenAPI spec with schemathesis (as a Hypothesis strategy per
operation): whatever the input, the service answers without a 5xx — bad input is a 4xx,
never a crash. (Schemathesis' own pytest plugin does not run under pytest 9 yet.)"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service import ServiceProcess

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "10"))


def test_no_route_answers_5xx(service: ServiceProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    failures: list[str] = []
    answered: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            # With an admin key: without one every answer would be a 401, which proves nothing.
            response = case.call(base_url=service.url, timeout=30, headers={"x-api-key": service.api_key})
            answered.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} body={str(case.body)[:200]} -> "
                    f"{response.status_code}: {response.text[:300]}"
                )

        check()
    assert operations >= 20
    assert sum(1 for status in answered if status != 401) > len(answered) / 2, "the key was not accepted"
    assert failures == [], "\n".join(failures[:20])
