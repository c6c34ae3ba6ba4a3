"""Generate docs/events.md from the event models and ``lifecycle.md`` (the server lifecycle and its
ordering rule): ``python -m wemcp.common.events.doc > docs/events.md``. A test keeps the file in step
with the code."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from wemcp.common.bus import DUPLICATE_WINDOW_SECONDS
from wemcp.common.events import ALL_EVENTS, STREAMS
from wemcp.common.events import spec as spec_module


def _type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " \\| ".join(_type(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    fmt = schema.get("format")
    return f"{schema.get('type', 'any')}" + (f" ({fmt})" if fmt else "")


# The one server lifecycle (states, transitions, who emits what, the ordering rule), kept beside
# the contracts so that a change of the SERVERS events and of the rule that orders them is one review.
LIFECYCLE = Path(__file__).with_name("lifecycle.md")


def render() -> str:
    out = ["# Events", "",
           "Generated from `libs/common/src/wemcp/common/events` by "
           "`python -m wemcp.common.events.doc > docs/events.md`; do not edit by hand.", "",
           "Every event carries `event_id` (UUID; also the JetStream `Nats-Msg-Id` and the consumers' "
           "idempotency key), `occurred_at` and `schema_version`. Changes are additive only.", "",
           f"JetStream duplicate window: {DUPLICATE_WINDOW_SECONDS // 60} minutes. Durable consumers are named "
           "`<service>-<subject with dots as dashes>`.", "", "## Streams", "",
           "| stream | subjects | retention (days) | what |", "|---|---|---|---|"]
    for spec in STREAMS:
        out.append(f"| `{spec.name}` | {', '.join(f'`{s}`' for s in spec.subjects)} | {spec.max_age_days} | "
                   f"{spec.description} |")
    out += ["", LIFECYCLE.read_text(encoding="utf-8").rstrip("\n")]
    for subject, cls in sorted(ALL_EVENTS.items()):
        schema = cls.model_json_schema()
        required = set(schema.get("required", []))
        out += ["", f"## `{subject}` — {cls.__name__}", "", f"Stream `{cls.stream}`.", "",
                inspect.cleandoc(cls.__doc__ or "").replace("\n", " "), "",
                "| field | type | required |", "|---|---|---|"]
        for name, prop in schema.get("properties", {}).items():
            out.append(f"| `{name}` | {_type(prop)} | {'yes' if name in required else 'no'} |")
    out += _spec_section()
    return "\n".join(out) + "\n"


def _spec_section() -> list[str]:
    """``server.submitted``'s ``spec``: the ServerSpec model and its parts, by their wire names."""
    schema = spec_module.ServerSpec.model_json_schema(by_alias=True)
    out = ["", "## `ServerSpec` — the source spec in `server.submitted`", "",
           inspect.cleandoc(spec_module.__doc__ or "").split("\n\n")[0].replace("\n", " "), "",
           "Keys not listed are kept as they are (a consumer re-serialises the spec to the JSON it read)."]
    parts = [("ServerSpec", schema), *sorted(schema.get("$defs", {}).items())]
    for name, part in parts:
        required = set(part.get("required", []))
        out += ["", f"### `{name}`", "", "| field | type | required |", "|---|---|---|"]
        for field, prop in part.get("properties", {}).items():
            out.append(f"| `{field}` | {_type(prop)} | {'yes' if field in required else 'no'} |")
    return out


if __name__ == "__main__":
    sys.stdout.write(render())
