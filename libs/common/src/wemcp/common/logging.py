"""structlog set-up: JSON lines in production, trace and span ids on every line, secrets redacted.

Redaction works on keys (``authorization``, ``token``, ``api_key``, ``password``, ``secret`` ...) and on
values that look like credentials (``Bearer ...``, ``key=...`` in URLs, platform keys ``wmk_...``), so a
handler that logs a whole header dict or a URL with ``?key=`` still leaks nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from opentelemetry import trace

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"(authori[sz]ation|cookie|token|secret|password|passwd|api[_-]?key|apikey|private[_-]?key|"
    r"client[_-]?secret|credential|x-wemcp-env-|upstream[_-]?key|kek)",
    re.IGNORECASE,
)
_SECRET_VALUE_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([?&](?:key|token|api_key|access_token|apikey|secret)=)[^&\s#\"']+"), r"\1" + REDACTED),
    (re.compile(r"\bwmk_[A-Za-z0-9_-]{8,}"), "wmk_" + REDACTED),
    (re.compile(r"(?i)(postgres(?:ql)?(?:\+asyncpg)?://[^:/@\s]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "jwt:" + REDACTED),
]


# Every pattern above needs one of these; most logged strings (paths, names, ids) have none, and
# one search is much cheaper than five substitutions (this runs on every value of every log line).
_MAYBE_SECRET = re.compile(r"=|wmk_|://|eyJ|\s")


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        if _MAYBE_SECRET.search(value) is None:
            return value
        for pattern, repl in _SECRET_VALUE_PATTERNS:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if _is_secret_key(k) and v not in (None, "") else redact_value(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


# Free text a program printed (a hosted server's stderr shown to its owner): besides the patterns
# above, assignments to secret-looking names and the shapes of well-known provider keys, which a
# server may print without any "Bearer" or "key=" around them.
_TEXT_SECRET_PATTERNS = [
    (re.compile(r"(?i)\b([A-Z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|apikey|access[_-]?key|"
                r"private[_-]?key|credential|auth)[A-Z0-9_.-]*[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]{4,}"),
     r"\1" + REDACTED),
    (re.compile(r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}"), REDACTED),  # OpenAI, Anthropic, Stripe
    (re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{20,}"), REDACTED),  # GitHub
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),  # Slack
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), REDACTED),  # Google API keys
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), REDACTED),  # GitLab
]


def redact_text(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with the given secret ``values`` (exact strings of 4+ characters, longest first) and
    anything secret-shaped replaced by ``[redacted]``. For free text such as a process's output;
    log fields go through ``redact_value`` (cheaper, run on every log line)."""
    for v in sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(v, REDACTED)
    for pattern, repl in _SECRET_VALUE_PATTERNS + _TEXT_SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and _secret_key_name(key)


@functools.lru_cache(maxsize=4096)  # log keys are a small, fixed vocabulary
def _secret_key_name(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event_dict.items()):
        if _is_secret_key(key) and value not in (None, ""):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(value)
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Route structlog and the standard library (uvicorn, sqlalchemy, faststream) through one
    pipeline. Safe to call more than once."""
    def add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    global _direct
    _direct = (handler, formatter, structlog.get_config()["processors"], service) if fmt == "json" else None
    # uvicorn's default log config gives its loggers handlers of their own and stops propagation,
    # which would bypass this pipeline and its redaction: route them through the root handler
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        own = logging.getLogger(name)
        own.handlers.clear()
        own.propagate = True
    for noisy in ("uvicorn.access", "httpx", "httpx2", "httpcore", "asyncio", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


# What configure_logging installed, when the format is JSON: (handler, formatter, structlog processors,
# service). ``info_line`` writes through it only while that exact set-up is still in place.
_direct: tuple[logging.Handler, logging.Formatter, Any, str] | None = None
_INFO = logging.INFO
_UTC = datetime.UTC


def info_line(event: str, fields: dict[str, Any], fallback: Any, name: str) -> None:
    """One ``info`` line, rendered exactly as the pipeline of :func:`configure_logging` renders it
    (context variables, the fields, ``event``, ``service``, ``level``, ``timestamp``, trace and span
    ids, then the same redaction and JSON), but written straight to its handler: no structlog
    processor chain, no stdlib ``LogRecord`` or ``findCaller``, no formatter. Used for the access line
    on hot paths (a large share of the gateway's CPU per call went to it). When the logging set-up
    is anything else (console format, another handler, a test's capture) it logs through
    ``fallback`` (a structlog logger) as before."""
    d = _direct
    root = logging.root
    logger = logging.getLogger(name)  # ``fallback``'s stdlib logger: its level and filters apply
    if (d is None or len(root.handlers) != 1 or root.handlers[0] is not d[0] or d[0].formatter is not d[1]
            or structlog.get_config()["processors"] is not d[2] or d[0].filters or root.filters
            or logger.filters or logger.handlers or not logger.propagate):
        fallback.info(event, **fields)
        return
    if not logger.isEnabledFor(_INFO):
        return
    out: dict[str, Any] = {}
    structlog.contextvars.merge_contextvars(None, "", out)
    out.update(fields)
    out["event"] = event
    out.setdefault("service", d[3])
    out["level"] = "info"
    out["timestamp"] = datetime.datetime.now(_UTC).isoformat().replace("+00:00", "Z")
    add_trace_ids(None, "", out)
    line = json.dumps(redact_processor(None, "", out), default=repr) + "\n"
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _write(d[0], line)
        return
    # Lines of one loop iteration leave in one write (a system call per line was a visible share of
    # a busy gateway's CPU); they may follow lines logged later in the same iteration.
    if not _held:
        loop.call_soon(_write_held, d[0])
    _held.append(line)


_held: list[str] = []


def _write_held(handler: logging.Handler) -> None:
    lines = "".join(_held)
    _held.clear()
    _write(handler, lines)


def _write(handler: logging.Handler, text: str) -> None:
    handler.acquire()
    try:
        stream = handler.stream  # type: ignore[attr-defined]
        stream.write(text)
        stream.flush()
    except Exception:  # as logging.Handler.handleError: a broken stream never breaks the caller
        handler.handleError(logging.makeLogRecord({"msg": "http_request"}))
    finally:
        handler.release()
