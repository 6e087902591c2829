"""The model an eval runs against: the one the service would use, from the same settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from agents.llm import LLMClient
from core.llm_server import EmbeddedLLM, local_model_available
from core.settings import Settings

__all__ = ["eval_llm"]


@contextlib.asynccontextmanager
async def eval_llm(settings: Settings) -> AsyncIterator[LLMClient]:
    """``LLMClient.from_settings(settings)``; with no ``INTERLOCK_LLM_BASE_URL`` and the local
    model installed, the embedded llama-server is started for the run and stopped after.

    Unlike the service, an eval does not fall back to a default URL where nothing answers:
    with no endpoint and no local model, ``from_settings`` raises ``ConfigurationError``.
    """
    embedded: EmbeddedLLM | None = None
    if not settings.llm_base_url and settings.local_llm and local_model_available():
        # Its own directory, so the service's llama-server log is left alone.
        embedded = EmbeddedLLM(settings.data_dir / "llm-eval")
        url = await asyncio.to_thread(embedded.start)
        settings = settings.model_copy(update={"llm_base_url": url})
    try:
        llm = LLMClient.from_settings(settings)
        try:
            yield llm
        finally:
            await llm.aclose()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
