"""The local backend: install into an isolated prefix, run sandboxed, bridge stdio to HTTP."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from wemcp.common.trust import Issuer
from wemcp.deployer import sandbox
from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.bridge import Bridge, Hosted
from wemcp.deployer.child import ChildError, Command
from wemcp.deployer.config import Settings
from wemcp.deployer.egress import EgressProxy, ProxyPolicy
from wemcp.deployer.install import Installed, Installer, InstallError
from wemcp.deployer.spec import DeploySpec, base_env, introspection_env, package_argv


class LocalDeployer:
    name = "local"

    def __init__(self, installer: Installer, bridge: Bridge) -> None:
        self.installer = installer
        self.bridge = bridge

    @classmethod
    def from_settings(cls, settings: Settings, signer: Issuer | None = None) -> LocalDeployer:
        """The installer, the sandbox (probed here, once) and the bridge, as the service runs them.
        ``signer``: the deployer's service credential (archives fetched from the catalog)."""
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o755)  # noqa: S103
        caps = sandbox.probe(settings.sandbox, settings.bwrap)
        limits = sandbox.Limits(settings.sandbox_memory_mb, settings.sandbox_cpu_seconds,
                                settings.sandbox_max_processes, settings.sandbox_max_open_files)
        run_dir = data / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o711)  # noqa: S103
        # Node's proxy preload, where every sandbox uid can read (never write) it
        runtime = data / "runtime"
        runtime.mkdir(exist_ok=True)
        os.chmod(runtime, 0o755)  # noqa: S103
        preload = runtime / "egress_preload.js"
        shutil.copyfile(Path(__file__).parents[1] / "runtime" / "egress_preload.js", preload)
        os.chmod(preload, 0o644)
        egress = EgressProxy(ProxyPolicy(settings.egress_proxy_allow), max_connections=settings.egress_max_connections,
                             max_bytes_per_hour=settings.egress_max_bytes_per_hour)
        bridge = Bridge(caps=caps, limits=limits, run_dir=run_dir, host=settings.bridge_host,
                        port=settings.bridge_port, public_url=settings.bridge_public_url,
                        idle_seconds=settings.idle_seconds, reap_interval=settings.reap_interval_seconds,
                        start_timeout=settings.start_timeout_seconds, call_timeout=settings.call_timeout_seconds,
                        max_children=settings.max_children_per_server, uid_base=settings.sandbox_uid_base,
                        keys=settings.key_ring, egress=egress, egress_python=settings.venv_python,
                        egress_preload=str(preload), max_idle_seconds=settings.max_idle_seconds)
        installer = Installer(data, archive_dir=settings.archive_dir.resolve(), venv_python=settings.venv_python,
                              npm_registry=settings.npm_registry, pip_index_url=settings.pip_index_url,
                              timeout=settings.install_timeout_seconds, archive_source=settings.catalog_url,
                              signer=signer, max_bytes=settings.install_max_bytes)
        return cls(installer, bridge)

    def plan(self, target: Target) -> Plan:
        spec = target.spec
        if spec.package is not None:
            pkg = spec.package
            kind = pkg.registry_type
            ref = f"{pkg.identifier}@{pkg.version or 'latest'}"
            prefix = self.installer.prefix_for(kind, pkg.identifier, pkg.version or "latest")
            install = (f"npm install --prefix {prefix} --ignore-scripts {ref}" if kind == "npm"
                       else f"uv venv {prefix} && uv pip install --no-build {pkg.identifier}=={pkg.version or '*'}")
        else:
            assert spec.archive is not None
            kind = "archive"
            install = f"extract archive {spec.archive.sha256 or spec.archive.path} and install its dependencies"
        return Plan(backend=self.name, slug=target.slug, kind=kind, actions=[
            install,
            f"run in sandbox ({self.bridge.caps.mode}; "
            + ("network through the platform's egress proxy only)" if spec.network else "no network)"),
            f"bridge stdio to {self.bridge.endpoint(target.slug)}",
        ])

    async def _install(self, spec: DeploySpec) -> Installed:
        try:
            if spec.package is not None:
                return await self.installer.install(spec.package)
            assert spec.archive is not None
            return await self.installer.install_archive(spec.archive)
        except InstallError as exc:
            raise DeployError(str(exc), exc.tail) from None

    def hosted_for(self, target: Target, installed: Installed) -> Hosted:
        spec = target.spec
        declared = {e.name for e in spec.env_vars()}
        static = base_env(spec)
        pkg = spec.package

        def make_command(env: dict[str, str]) -> Command:
            values = {**static, **env}
            args = package_argv(pkg, values) if pkg is not None else []
            return Command(argv=[*installed.argv, *args], root=Path(installed.root), env=values)

        return Hosted(slug=target.slug, make_command=make_command, allowed_env=declared, network=spec.network,
                      idle_seconds=spec.idle_seconds)

    def check_hostable(self, spec: DeploySpec) -> None:
        """Fail closed, before anything is installed: no working sandbox here, or a server that asks
        for network where no egress proxy can be its only way out."""
        if self.bridge.caps.refusal:
            raise DeployError(self.bridge.caps.refusal)
        if spec.network and (self.bridge.egress is None or not self.bridge.caps.netns):
            raise DeployError("hosted servers cannot have network here (\"network\": true needs the platform's "
                              "egress proxy and a network namespace per server); remove \"network\" or host it "
                              "remotely")

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        self.check_hostable(target.spec)
        await progress("installing", self.plan(target).actions[0])
        installed = await self._install(target.spec)
        await progress("installed", f"version {installed.version}" + (" (cached)" if installed.cached else ""))
        await self.bridge.unregister(target.slug)  # a redeploy replaces every child of the old version
        self.bridge.register(self.hosted_for(target, installed))
        await progress("starting", f"sandbox {self.bridge.caps.mode}")
        try:
            # Start once without any caller's secrets (required ones get a placeholder that is no
            # secret: spec.introspection_env): this is also the child introspection uses.
            child = await self.bridge.child_for(target.slug, introspection_env(target.spec))
        except ChildError as exc:
            await self.bridge.unregister(target.slug)
            missing = [e.name for e in target.spec.env_vars() if e.is_required and e.default is None]
            reason = f"the server crashed at start: {exc}"
            if missing:
                reason += f" (it may need {', '.join(missing)}; servers should start without secrets)"
            raise DeployError(reason, exc.tail) from None
        return Outcome(endpoint=self.bridge.endpoint(target.slug), transport="streamable-http",
                       package_version=installed.version, introspect_url=self.bridge.endpoint(target.slug),
                       handshake_version=(child.init_result or {}).get("protocolVersion"))

    async def restore(self, target: Target) -> None:
        """Re-register an already deployed server after a restart (children start on the next call)."""
        self.check_hostable(target.spec)
        installed = await self._install(target.spec)
        self.bridge.register(self.hosted_for(target, installed))

    async def status(self, slug: str) -> RuntimeStatus:
        hosted = self.bridge.hosted.get(slug)
        if hosted is None:
            return RuntimeStatus("stopped")
        alive = [c for c in hosted.children.values() if c.alive]
        return RuntimeStatus("running" if alive else "idle", replicas=len(alive),
                             detail={"pids": [c.proc.pid for c in alive if c.proc], "sandbox": self.bridge.caps.mode})

    async def logs(self, slug: str, lines: int = 100) -> str:
        hosted = self.bridge.hosted.get(slug)
        if hosted is None:
            return ""
        parts = [c.tail(lines) for c in hosted.children.values()]
        return "\n".join(p for p in parts if p) or hosted.last_tail

    async def scale(self, slug: str, replicas: int) -> None:
        hosted = self.bridge.hosted.get(slug)
        if hosted is None:
            raise DeployError(f"{slug} is not deployed here")
        if replicas == 0:
            await self.bridge.scale_to_zero(hosted)
        else:
            await self.bridge.child_for(slug, {})  # children per credential set start on demand

    async def undeploy(self, slug: str) -> None:
        await self.bridge.unregister(slug)
