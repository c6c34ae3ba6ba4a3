"""Remote servers (Streamable HTTP or SSE URLs): registered without hosting, after an SSRF check."""

from __future__ import annotations

from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.spec import fill
from wemcp.deployer.ssrf import UnsafeUrl, check_url


class RemoteDeployer:
    name = "remote"

    def __init__(self, allow: list[str]) -> None:
        self.allow = allow
        self.registered: dict[str, str] = {}

    def plan(self, target: Target) -> Plan:
        r = target.spec.remotes[0]
        return Plan(backend=self.name, slug=target.slug, kind="remote",
                    actions=[f"check {r.url} resolves to public addresses", "introspect it; host nothing"])

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        remote = target.spec.remotes[0]
        if "{" in remote.url:
            url = fill(remote.url, {})
            if "{" in url:
                raise DeployError("the remote URL has placeholders the platform fills per user; "
                                  "it cannot be checked until a user configures it")
        await progress("checking", f"SSRF check of {remote.url}")
        try:
            await check_url(remote.url, self.allow)
        except UnsafeUrl as exc:
            raise DeployError(str(exc)) from None
        headers = {h.name: h.value for h in remote.headers if h.value and not h.is_secret and "{" not in h.value}
        self.registered[target.slug] = remote.url
        return Outcome(endpoint=remote.url, transport=remote.type, introspect_url=remote.url,
                       introspect_headers=headers)

    async def status(self, slug: str) -> RuntimeStatus:
        return RuntimeStatus("running" if slug in self.registered else "stopped",
                             replicas=0, detail={"hosted": False})

    async def logs(self, slug: str, lines: int = 100) -> str:
        return ""

    async def scale(self, slug: str, replicas: int) -> None:
        return None

    async def undeploy(self, slug: str) -> None:
        self.registered.pop(slug, None)
