from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings
from wemcp.common.sealing import MIN_PASSPHRASE, Keyring
from wemcp.quota.config import check_run_secret


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_AGENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "agents"
    port: int = Field(default=8007, ge=0, le=65535)

    # MCP tools `{"type": "mcp", "ref": slug}` are called at `<gateway_url>/mcp/<slug>`.
    gateway_url: str = "http://127.0.0.1:8000"
    # Encrypts model-provider API keys at rest (wemcp.common.sealing: envelope AES-256-GCM under a KEK
    # derived from this value). Comma-separated: a key ring, the first seals, every one opens.
    # Unset: providers without a key still work; storing a key is refused with a clear error.
    provider_key_secret: SecretStr | None = None
    # Shared with the gateway and ratelimit: signs the agent-run context sent with every MCP call
    # (comma-separated: a key ring, the first signs; wemcp.quota.runcontext).
    agent_run_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("WEMCP_AGENT_RUN_SECRET", "AGENT_RUN_SECRET",
                                                    "agent_run_secret"))
    agent_run_ttl_seconds: int = Field(default=900, gt=0)

    # The tool loop.
    max_tool_rounds: int = Field(default=8, ge=1, le=64)  # default per request
    max_tool_rounds_limit: int = Field(default=16, ge=1, le=64)  # what a request may ask for
    provider_timeout_seconds: float = Field(default=60.0, gt=0)  # per provider read (between chunks)
    provider_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    mcp_timeout_seconds: float = Field(default=30.0, gt=0)  # connect + list, and each tools/call
    tool_output_max_chars: int = Field(default=20_000, ge=100)  # what the model sees of one result
    # The MCP connection pool (mcp_pool.py): entries per (user, run scope, server, headers).
    mcp_pool_max_entries: int = Field(default=512, ge=1)
    mcp_pool_idle_seconds: float = Field(default=60.0, gt=0)  # an unused entry is closed after this
    mcp_pool_connections: int = Field(default=8, ge=1)  # HTTP connections per entry
    # Idle keep-alive connections are dropped before the server drops them (uvicorn's default: 5 s; the
    # platform's own services keep them 75 s, but an MCP server elsewhere may not).
    mcp_keepalive_seconds: float = Field(default=4.0, ge=0)
    # How long a tools/list result is reused; short, so a disabled or changed server shows at once.
    mcp_tools_ttl_seconds: float = Field(default=5.0, ge=0, le=60)

    @field_validator("provider_key_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and any(len(p.strip()) < MIN_PASSPHRASE for p in v.get_secret_value().split(",")):
            raise ValueError(f"must be at least {MIN_PASSPHRASE} characters (each, when several are "
                             "separated by commas)")
        return v

    def provider_keyring(self) -> Keyring | None:
        """The key ring sealing provider API keys; None when no secret is configured."""
        if self.provider_key_secret is None:
            return None
        return provider_keyring(self.provider_key_secret.get_secret_value())

    @field_validator("agent_run_secret")
    @classmethod
    def _run_secret(cls, v: SecretStr | None) -> SecretStr | None:
        return check_run_secret(v)


@lru_cache(maxsize=8)
def provider_keyring(spec: str) -> Keyring:
    return Keyring.from_passphrases(spec, setting="WEMCP_AGENTS_PROVIDER_KEY_SECRET")


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
