"""The goods service's process state and database session as FastAPI dependencies. Handlers declare
``s: Session``, ``sessions: Sessions`` or ``settings: GoodsSettings`` in their signature instead of
reaching ``request.app.state``. goods keeps no state of its own: the runtime's session factory and
settings are all it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from wemcp.common.deps import RuntimeOf, Session, Sessions
from wemcp.goods.config import Settings

# a handler that needs more than one session (a change, then a fresh read of its result) opens them
# from ``Sessions``
__all__ = ["GoodsSettings", "Session", "Sessions"]


def _settings(rt: RuntimeOf) -> Settings:
    settings = rt.settings
    if not isinstance(settings, Settings):
        raise RuntimeError("the goods service runs with goods' settings (wemcp.goods.config.Settings)")
    return settings


GoodsSettings = Annotated[Settings, Depends(_settings)]
