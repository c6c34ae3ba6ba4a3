from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_DEPLOYER_", extra="ignore", populate_by_name=True)

    service_name: str = "deployer"
    port: int = Field(default=8004, ge=0, le=65535)

    # Where packages are installed (one prefix per package@version), caches and run directories live.
    # It must be readable by the sandbox uids (not under a 0700 directory such as /root).
    data_dir: Path = Path(".data/deployer")
    # Uploaded source archives (`<sha256>.tar.gz` / `.zip`); archive specs may only name files in here.
    archive_dir: Path = Path(".data/archives")
    # The catalog, which keeps archives uploaded by users (internal endpoint); unset: only archive_dir.
    catalog_url: str | None = "http://127.0.0.1:8002"
    default_backend: str = "local"

    # The stdio→HTTP bridge of the local backend: loopback only. 0 picks a free port at start.
    bridge_host: str = "127.0.0.1"
    bridge_port: int = Field(default=8710, ge=0, le=65535)
    # Endpoints announced in server.deployed; defaults to http://{bridge_host}:{port}.
    bridge_public_url: str | None = None

    # Sandbox (README#isolation): "auto" uses bubblewrap where it works, else (root only) the restricted
    # sandbox (own uid + empty network namespace); where neither works hosted servers are refused.
    sandbox: str = Field(default="auto", pattern="^(auto|bwrap|restricted)$")
    # The bubblewrap binary: a name looked up on PATH or an absolute path.
    bwrap: str = "bwrap"
    sandbox_memory_mb: int = Field(default=1024, ge=64)
    sandbox_cpu_seconds: int = Field(default=3600, ge=1)
    sandbox_max_processes: int = Field(default=64, ge=4)
    sandbox_max_open_files: int = Field(default=256, ge=16)
    sandbox_uid_base: int = Field(default=200000, ge=1000)

    # The egress proxy of hosted servers with "network": true (wemcp.deployer.egress). Its allow-list
    # admits non-public destinations: host names, addresses, CIDRs (as WEMCP_EGRESS_ALLOW) and
    # host:port pinholes (tests open one loopback port with these); empty in production.
    egress_proxy_allow: str = ""
    egress_max_connections: int = Field(default=32, ge=1)  # open at once, per server
    egress_max_bytes_per_hour: int = Field(default=1 << 30, ge=1024)  # both directions, per server

    # Scale to zero: a hosted server's child with no call in flight and no open stream for this long is
    # stopped (the next call starts it again). A deployment may ask for its own ("idleSeconds" in the
    # spec), at most max_idle_seconds.
    idle_seconds: float = Field(default=600.0, gt=0)
    max_idle_seconds: float = Field(default=3600.0, gt=0)
    reap_interval_seconds: float = Field(default=15.0, gt=0)
    start_timeout_seconds: float = Field(default=60.0, gt=0)
    call_timeout_seconds: float = Field(default=120.0, gt=0)
    install_timeout_seconds: float = Field(default=600.0, gt=0)  # per install step; then killed by PID
    install_max_bytes: int = Field(default=1 << 30, ge=1 << 20)  # on disk, per installed package or archive
    max_children_per_server: int = Field(default=16, ge=1)
    max_concurrent_deploys: int = Field(default=2, ge=1)

    npm_registry: str | None = None
    pip_index_url: str | None = None
    # Base interpreter for per-package venvs (must be readable by the sandbox uid).
    venv_python: str = "/usr/bin/python3"

    # Cloud backends: live calls only with credentials and this explicit opt-in.
    cloud_live: bool = False
    # Aliyun FC 3.0: account id (the endpoint is https://<account>.<region>.fc.aliyuncs.com unless
    # ALIYUN_ENDPOINT is set); credentials from WEMCP_DEPLOYER_ALIYUN_KEY_ID / _SECRET.
    aliyun_account_id: str = ""
    aliyun_region: str = "cn-hangzhou"
    aliyun_endpoint: str | None = None
    # Tencent SCF; credentials from WEMCP_DEPLOYER_TENCENT_KEY_ID / _SECRET.
    tencent_region: str = "ap-guangzhou"
    tencent_endpoint: str | None = None
    # Kubernetes manifests (backends/kubernetes.py): runtime images (real, pullable references)
    kubernetes_node_image: str = "docker.io/library/node:20-bookworm-slim"
    kubernetes_python_image: str = "docker.io/library/python:3.11-slim-bookworm"
    kubernetes_namespace: str = "wemcp-servers"
    # The kubernetes backend (DEFAULT_BACKEND=kubernetes): the namespace the gateway and the deployer run
    # in (only their pods reach hosted servers), how long a new server's pod may take to be ready, and
    # the cluster's DNS domain (endpoints are http://mcp-<slug>.<namespace>.svc.<domain>/mcp). The API
    # server: the in-cluster service account, else the kubeconfig.
    kubernetes_platform_namespace: str = "wemcp"
    kubernetes_ready_timeout_seconds: float = Field(default=300.0, gt=0)
    kubernetes_cluster_domain: str = "cluster.local"

    @field_validator("egress_proxy_allow")
    @classmethod
    def _check_proxy_allow(cls, v: str) -> str:
        from wemcp.deployer.egress import ProxyPolicy

        ProxyPolicy(v)  # ValueError names the bad entry
        return v

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
