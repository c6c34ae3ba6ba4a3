"""Server-sent events as the tests read a stream of JSON events (the deployment events, for one):
parsed by the platform's own parser (``wemcp.common.sse``)."""

from __future__ import annotations

import json
from typing import Any

from wemcp.common import sse


def json_events(raw: str) -> list[dict[str, Any]]:
    """The complete events of ``raw`` (an unfinished last one is left out, comments skipped), each
    ``{"event": type, "data": its JSON decoded, "id": the stream's last event id or ""}``."""
    return [{"event": e.event, "data": json.loads(e.data), "id": e.id} for e in sse.parse(raw.encode())]
