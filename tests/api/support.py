"""Assertions shared by the API tests."""

from __future__ import annotations

import httpx


def expect_error(response: httpx.Response, status: int) -> str:
    """Assert an error answer: the status, a JSON body ``{"error", "detail"}`` with a
    message; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    return str(body["detail"])
