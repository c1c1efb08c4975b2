"""An OpenAI-compatible Chat Completions endpoint: one structured-output call, answered into a pydantic model.

Wire format: the OpenAI API's Chat Completions (``POST {base_url}/chat/completions``) with Structured Outputs,
``response_format = {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``, as built and
parsed by the official ``openai`` library: ``chat.completions.parse`` when the schema is a pydantic model's (made
strict by the library), ``chat.completions.create`` when the caller hands its own JSON schema (``json_schema``: e.g.
the triage engine's, generated from its digest so that an answer cannot name an unknown entry), the answer then
validated by the pydantic model as ``parse`` does. Any server implementing that API works: OpenAI, Azure OpenAI,
vLLM, Ollama, LiteLLM, llama.cpp's server (which turns the schema into a grammar), ...

Retries are the ``openai`` client's own (``max_retries``: 408, 409, 429 and 5xx answers, timeouts and connection
errors, with exponential backoff honouring ``Retry-After`` / ``retry-after-ms``). That is a deliberate exception to
"Temporal's retry policy is the only retry layer": the caller (the ``llm`` triage engine) falls back to
deterministic rules inside one call, so a failure here must be final, not retried by an activity retry policy.

Every failure is one ``LlmError`` whose message is a short reason, safe to log and to show a user: no API key,
no request, and no model text beyond a bounded excerpt. The openai exceptions are not chained (``from None``),
since they hold the request, headers included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fixloop.core.config import LlmSettings
from fixloop.core.parsing import clean, validation_message
from fixloop.integrations.checks import CheckResult, Status
from fixloop.integrations.errors import ExceptionMap, map_exceptions

T = TypeVar("T", bound=BaseModel)

REFUSAL_EXCERPT = 160
CUT_OFF = "the answer was cut off at the token limit"
FILTERED = "the endpoint's content filter stopped the answer"
SCHEMA_NAME_MAX = 64  # OpenAI: a response format's name is a-z, A-Z, 0-9, underscores and dashes, at most 64


class LlmError(Exception):
    """The endpoint gave no usable answer; ``str(e)`` is the reason."""


class LlmTransportError(LlmError):
    """The endpoint could not be reached (connection refused, DNS, TLS, connection reset)."""


class LlmTimeout(LlmTransportError):
    """No answer within the timeout, on every attempt."""


class LlmStatusError(LlmError):
    """The endpoint answered with an HTTP error status (after the client's retries for retryable ones)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class LlmRateLimited(LlmStatusError):
    """HTTP 429 on every attempt."""


class LlmRefusal(LlmError):
    """The model refused (``message.refusal``) or the endpoint's content filter stopped the answer."""


class LlmInvalidAnswer(LlmError):
    """The answer is not what was asked: not JSON, not of the schema, cut off, or (raised by the caller) failing
    the caller's own checks."""


@dataclass(frozen=True)
class Usage:
    """What one completion cost, as the endpoint's ``usage`` says (0 when it says nothing)."""

    prompt_tokens: int
    completion_tokens: int


async def structured_completion(
    settings: LlmSettings,
    *,
    system: str,
    user: str,
    schema: type[T],
    json_schema: dict[str, Any] | None = None,
    on_usage: Callable[[Usage], None] | None = None,
) -> T:
    """Send one ``system`` + ``user`` message pair and return the answer parsed into ``schema``.

    ``json_schema``: the JSON schema sent instead of ``schema``'s own (strict: every object closed, every property
    required; the caller keeps it a subset of what ``schema`` accepts); the answer is still validated by
    ``schema``. ``on_usage`` is called with the endpoint's token counts of an answered request (for the bench).
    ``settings`` gives the endpoint, model, key, per-request ``timeout`` (seconds) and ``max_retries``; it must be
    complete (``ConfigError`` otherwise). Raises an ``LlmError`` subclass on any failure (see the module doc).
    """
    import openai  # here, not at the top: it takes about a second to import, and only the llm engine needs it

    settings.require()
    assert settings.base_url and settings.model and settings.api_key  # for type checkers: require() checked them
    attempts = 1 + settings.max_retries
    tries = f"{attempts} attempt" + ("" if attempts == 1 else "s")
    errors: ExceptionMap = {  # the openai library's exceptions (and its parse of a body that is no completion)
        openai.APITimeoutError: lambda e, _: LlmTimeout(f"no answer within {settings.timeout:g} s ({tries})"),
        openai.APIConnectionError: lambda e, _: LlmTransportError(
            f"cannot reach the endpoint ({type(e.__cause__).__name__ if e.__cause__ else 'connection error'}, {tries})"
        ),
        openai.RateLimitError: lambda e, _: LlmRateLimited(429, f"rate limited (HTTP 429, {tries})"),
        openai.APIStatusError: lambda e, _: LlmStatusError(e.status_code, f"HTTP {e.status_code}{_error_code(e.body)}"),
        openai.LengthFinishReasonError: lambda e, _: LlmInvalidAnswer(CUT_OFF),
        openai.ContentFilterFinishReasonError: lambda e, _: LlmRefusal(FILTERED),
        ValidationError: lambda e, _: LlmInvalidAnswer(
            f"the answer does not match the schema: {validation_message(e)}"
        ),
        openai.OpenAIError: lambda e, _: LlmError(f"unexpected failure ({type(e).__name__})"),  # any other
        **dict.fromkeys((TypeError, AttributeError, KeyError), _not_a_completion),
    }
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    with map_exceptions(errors):
        async with openai.AsyncOpenAI(
            base_url=str(settings.base_url),
            api_key=settings.api_key.get_secret_value(),
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        ) as client:
            if json_schema is None:
                completion: Any = await client.chat.completions.parse(
                    model=settings.model, messages=messages, response_format=schema
                )
            else:
                name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:SCHEMA_NAME_MAX]
                completion = await client.chat.completions.create(
                    model=settings.model,
                    messages=messages,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": name, "schema": json_schema, "strict": True},
                    },
                )
        if on_usage is not None and completion.usage is not None:
            on_usage(Usage(completion.usage.prompt_tokens or 0, completion.usage.completion_tokens or 0))
        if completion.choices is None:  # create() does not validate the body: a 200 that is no completion
            raise LlmInvalidAnswer("the answer is not a chat completion (no choices)")
        if not completion.choices:
            raise LlmInvalidAnswer("the answer has no choices")
        choice = completion.choices[0]
        message = choice.message
        if message.refusal:
            raise LlmRefusal(f"the model refused: {clean(message.refusal, REFUSAL_EXCERPT)}")
        if json_schema is not None:  # what parse does for its own schema: the finish reason, then the JSON
            if choice.finish_reason == "length":
                raise LlmInvalidAnswer(CUT_OFF)
            if choice.finish_reason == "content_filter":
                raise LlmRefusal(FILTERED)
            if not message.content:
                raise LlmInvalidAnswer("the answer is empty")
            return schema.model_validate_json(message.content)
    if message.parsed is None:
        raise LlmInvalidAnswer("the answer is empty")
    return message.parsed


def _not_a_completion(e: Exception, _: str) -> LlmError:
    """The library parsing a 200 body that is no chat completion (``TypeError``, ``AttributeError``, ``KeyError``)."""
    return LlmInvalidAnswer(f"the answer is not a chat completion ({type(e).__name__})")


def _error_code(body: object) -> str:
    """`` (<code or type>)`` from an OpenAI-style error body ``{"error": {"code", "type", "message"}}``; the
    message itself is left out (providers echo parts of the key or the request in it)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    code = error.get("code") or error.get("type")
    return f" ({clean(code, 60)})" if isinstance(code, str | int) and code != "" else ""


def check(settings: LlmSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s llm line: ``GET {base_url}/models`` on the OpenAI-compatible endpoint
    (``openai``, no retries, bounded by ``timeout`` seconds), and whether the model is listed (informative: some
    providers list deployments under other names). ``settings`` must be complete (``LlmSettings.require``)."""
    import openai  # here, not at the top: it takes about a second to import (see structured_completion)

    assert settings.base_url and settings.model and settings.api_key  # the caller checked them (require())
    target = str(settings.base_url).rstrip("/")
    try:
        with openai.OpenAI(
            base_url=str(settings.base_url),
            api_key=settings.api_key.get_secret_value(),
            timeout=min(settings.timeout, timeout),
            max_retries=0,
        ) as client:
            models = [m.id for m in client.models.list().data]
    except openai.APITimeoutError:
        return CheckResult(Status.FAIL, "llm", f"{target}: no answer within {min(settings.timeout, timeout):g} s")
    except openai.APIConnectionError as e:
        cause = type(e.__cause__).__name__ if e.__cause__ else "connection error"
        return CheckResult(Status.FAIL, "llm", f"{target}: cannot connect ({cause}) (check FIXLOOP_LLM_BASE_URL)")
    except openai.APIStatusError as e:
        hints = {401: "OPENAI_API_KEY", 403: "OPENAI_API_KEY", 404: "FIXLOOP_LLM_BASE_URL, up to and including /v1"}
        found = hints.get(e.status_code, "FIXLOOP_LLM_BASE_URL")
        return CheckResult(Status.FAIL, "llm", f"{target}: HTTP {e.status_code} (check {found})")
    except (openai.OpenAIError, TypeError, AttributeError, ValueError) as e:  # a 200 that is no model list
        return CheckResult(
            Status.FAIL, "llm", f"{target}: not a model list ({type(e).__name__}) (check FIXLOOP_LLM_BASE_URL)"
        )
    listed = "listed" if settings.model in models else f"not among the {len(models)} models it lists"
    return CheckResult(Status.OK, "llm", f"{target} model {settings.model} ({listed})")
