"""Remote servers (Streamable HTTP or SSE URLs): registered without hosting, after the egress
policy's check (``wemcp.common.netpolicy``). The check here is for a clear early answer; what
protects is the check every later connection makes when it is opened (the introspection below, the
gateway's calls), since the name may resolve elsewhere by then."""

from __future__ import annotations

from wemcp.common.netpolicy import EgressPolicy, EgressRefused
from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.spec import fill


class RemoteDeployer:
    name = "remote"

    def __init__(self, egress: EgressPolicy) -> None:
        self.egress = egress
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
        await progress("checking", f"egress check of {remote.url}")
        try:
            await self.egress.check(remote.url)
        except EgressRefused as exc:
            raise DeployError(f"remote servers must be reachable on the public internet: {exc}") from None
        except ValueError as exc:
            raise DeployError(f"the remote URL {exc}") from None
        except OSError:
            raise DeployError(f"the host of {remote.url} does not resolve; check the URL") from None
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
