"""Event contracts: pure Pydantic models, one module per aggregate.

Changes are additive only: new optional fields, never renamed or removed ones; a breaking change is
a new ``schema_version``. ``ALL_EVENTS`` maps each subject to its class.
"""

from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.agents import AgentSaved
from wemcp.common.events.base import STREAMS, Event, StreamSpec
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.crawler import CrawlerDiscovered
from wemcp.common.events.goods import AnnouncementChanged, EntitlementChanged
from wemcp.common.events.servers import (
    ServerDeployed,
    ServerDeployFailed,
    ServerDeploying,
    ServerDisabled,
    ServerEnabled,
    ServerHealth,
    ServerRejected,
    ServerSubmitted,
    ServerUpdated,
)
from wemcp.common.events.spec import (
    Archive,
    Argument,
    Input,
    Manifest,
    OpenApiSource,
    Package,
    Remote,
    ServerSpec,
    Transport,
)
from wemcp.common.events.users import (
    ApiKeyRevoked,
    SecretChanged,
    SessionRevoked,
    UserBanned,
    UserDeleted,
    UserRegistered,
    UserRoleChanged,
)

ALL_EVENTS: dict[str, type[Event]] = {
    cls.subject: cls
    for cls in (
        ServerSubmitted,
        ServerDeploying,
        ServerDeployed,
        ServerDeployFailed,
        ServerDisabled,
        ServerEnabled,
        ServerUpdated,
        ServerHealth,
        ServerRejected,
        McpCallCompleted,
        McpCallsCompleted,
        UserRegistered,
        UserRoleChanged,
        ApiKeyRevoked,
        SessionRevoked,
        SecretChanged,
        UserBanned,
        UserDeleted,
        CrawlerDiscovered,
        AdminActionRecorded,
        EntitlementChanged,
        AnnouncementChanged,
        AgentSaved,
    )
}

__all__ = [
    "ALL_EVENTS",
    "STREAMS",
    "AdminActionRecorded",
    "AgentSaved",
    "AnnouncementChanged",
    "ApiKeyRevoked",
    "Archive",
    "Argument",
    "CrawlerDiscovered",
    "EntitlementChanged",
    "Event",
    "Input",
    "Manifest",
    "McpCallCompleted",
    "McpCallsCompleted",
    "OpenApiSource",
    "Package",
    "Remote",
    "SecretChanged",
    "ServerDeployFailed",
    "ServerDeployed",
    "ServerDeploying",
    "ServerDisabled",
    "ServerEnabled",
    "ServerHealth",
    "ServerRejected",
    "ServerSpec",
    "ServerSubmitted",
    "ServerUpdated",
    "SessionRevoked",
    "StreamSpec",
    "Transport",
    "UserBanned",
    "UserDeleted",
    "UserRegistered",
    "UserRoleChanged",
]
