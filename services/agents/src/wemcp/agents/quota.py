"""The per-agent daily quota, through the quota library (``wemcp.quota``, libs/quota).

:class:`AgentQuota` is the seam: the service only needs ``admit(user_id, agent_id)``. The default
implementation runs :class:`QuotaClient` in-process on the shared Redis (one Lua script
per call, policies from the ratelimit service's live policy snapshot, 100/day by default).
"""

from __future__ import annotations

import uuid
from typing import Protocol

from wemcp.agents.config import Settings
from wemcp.common.config import load_settings
from wemcp.quota.client import Decision, QuotaClient, open_quota_client
from wemcp.quota.config import QuotaSettings


class AgentQuota(Protocol):
    async def admit(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> Decision: ...

    async def aclose(self) -> None: ...


class RatelimitQuota:
    def __init__(self, client: QuotaClient) -> None:
        self.client = client

    async def admit(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> Decision:
        return await self.client.decide(user_id, "agent", str(agent_id), "system")

    async def aclose(self) -> None:
        await self.client.aclose()


async def open_agent_quota(redis, settings: Settings) -> RatelimitQuota:
    # The ratelimit settings come from the same environment (WEMCP_RATELIMIT_DAY_ZONE ...);
    # the infrastructure URLs and the run secret are the agents service's own.
    rl = load_settings(QuotaSettings, database_url=settings.database_url, nats_url=settings.nats_url,
                       redis_url=settings.redis_url, agent_run_secret=settings.agent_run_secret)
    return RatelimitQuota(await open_quota_client(redis, rl))
