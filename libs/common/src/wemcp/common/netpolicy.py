"""The one egress policy: where the platform may connect when it fetches something *on a user's
behalf* (an OpenAPI document or API, a remote MCP server, an agent's ``server_url``, an OAuth
endpoint, a crawled page), and which headers such a request may carry.

**Addresses.** Only globally routable addresses. ``ipaddress``'s ``is_global`` is the base; what it
misses or gets wrong for this purpose is refused explicitly: the shared address space
``100.64.0.0/10`` (carrier-grade NAT; Aliyun's metadata service is ``100.100.100.200``), Azure's
``168.63.129.16``, ``192.0.0.0/24``, ``0.0.0.0/8``, multicast, site-local ``fec0::/10``, the
local-use NAT64 prefix, and IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
6to4, NAT64 ``64:ff9b::/96``), which are judged by the IPv4 address inside.

**At connect time.** A host name is resolved once, *every* address is checked, and the connection
is made to a checked address (TLS still verifies, and ``Host``/SNI still name, the host name). A
check made earlier and a connect made later would each resolve the name, and a name that answers
a public address first and ``127.0.0.1`` next (DNS rebinding) would pass the check and reach the
loopback. The clients below do the check inside the connect, so it is paid once per new
connection, never per request on a pooled one.

**Allow-list** (``WEMCP_EGRESS_ALLOW``, comma separated): host names (``api.internal``, or
``*.corp.example`` for a domain and its subdomains), IP addresses and CIDRs. A host allowed by name
connects to whatever it resolves to; an allowed network admits its addresses for any name. The
package registries this machine is configured with (pip/uv index URLs, the npm registry) are
allowed by name: on sandboxed build machines they resolve to non-global addresses.

**Clients.** :meth:`EgressPolicy.transport` / :meth:`EgressPolicy.client` for httpx2 (and what is
built on it: the MCP SDK, authlib), :meth:`EgressPolicy.create_connection` for asyncio protocols
(the gateway's own HTTP/1.1 client). A refusal is :class:`EgressRefused` (an ``OSError``, so every
stack treats it as a failed connect); :func:`refusal_in` finds it inside whatever the stack wrapped
it in, for a clear message.

**Headers.** :func:`reserved_header` names the header names a submission may not declare and
:func:`outbound` drops them from a request: the platform's own ``X-WeMcp-*`` (identity, the
service credential, ``X-WeMcp-Env-*``), hop-by-hop headers and the ones the HTTP layer owns.
"""

from __future__ import annotations

import asyncio
import configparser
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wemcp.common.logging import get_logger

log = get_logger("wemcp.egress")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "WEMCP_EGRESS_ALLOW"

# ---- addresses -------------------------------------------------------------------------------------

_V4_DENY: tuple[tuple[Network, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
    ("100.64.0.0/10", "shared address space (100.64.0.0/10: carrier-grade NAT, cloud metadata)"),
    ("168.63.129.16/32", "a cloud platform's service address"),
    ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
))
_V6_DENY: tuple[tuple[Network, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in (
    ("::/96", "an IPv4-compatible IPv6 address"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("2001::/32", "Teredo"),
    ("fc00::/7", "unique local (fc00::/7)"),
    ("fec0::/10", "site-local (fec0::/10)"),
    ("ff00::/8", "multicast"),
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: Address) -> str | None:
    """Why ``ip`` is not a destination the platform connects to on a user's behalf (``None``: it is
    globally routable)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_v4(ip)
        if inner is not None:
            why = address_refusal(inner)
            return f"{why}, inside an IPv6 address" if why else None
        table = _V6_DENY
    else:
        table = _V4_DENY
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local (cloud metadata services live there)"
    for net, why in table:
        if ip in net:
            return why
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "not globally routable"
    return None


class EgressRefused(OSError):
    """A destination the egress policy refuses. ``str()`` is safe to show the caller: it names the
    host and the kind of address, not the address (the caller gave the name; the internal address
    it resolves to is not theirs to learn). ``address`` is for logs."""

    def __init__(self, host: str, reason: str, address: str = "") -> None:
        super().__init__(f"{host!r} is not a public address ({reason}); the platform only connects to "
                         "public addresses")
        self.host, self.reason, self.address = host, reason, address


def refusal_in(exc: BaseException | None) -> EgressRefused | None:
    """The :class:`EgressRefused` behind ``exc``, however the HTTP stack wrapped it (causes, contexts,
    exception groups)."""
    seen: list[BaseException] = [exc] if exc is not None else []
    visited: set[int] = set()
    while seen:
        e = seen.pop()
        if id(e) in visited:
            continue
        visited.add(id(e))
        if isinstance(e, EgressRefused):
            return e
        if isinstance(e, BaseExceptionGroup):
            seen.extend(e.exceptions)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                seen.append(nxt)
    return None


# ---- the resolver (one module attribute, so tests can answer for it: DNS rebinding without DNS) ------

Resolver = Callable[[str, int], Awaitable[list[tuple[int, str]]]]


async def system_resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(family, address) pairs for ``host``, as the system resolver answers, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            pair = (int(family), str(sockaddr[0]))
            if pair not in out:
                out.append(pair)
    return out


resolve: Resolver = system_resolve


# ---- the package registries this machine installs from ---------------------------------------------

def _hosts_of(urls: Iterable[str]) -> set[str]:
    out = set()
    for url in urls:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.hostname:
            out.add(parts.hostname.lower())
    return out


def registry_urls(environ: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, list[str]]:
    """The package registries pip, uv and npm are configured with here, by ecosystem, first the one
    an installer uses by default: ``{"pypi": [index URLs], "npm": [registry URLs]}``.

    PyPI: ``PIP_INDEX_URL``/``PIP_EXTRA_INDEX_URL``, ``UV_INDEX_URL``/``UV_DEFAULT_INDEX``/
    ``UV_EXTRA_INDEX_URL``/``UV_INDEX``, pip.conf (``index-url``, ``extra-index-url``); pip's own
    default when nothing names an index. npm: ``npm_config_registry``, .npmrc's ``registry``; npm's
    own default when nothing names one; ``"npm:@scope"``: .npmrc's ``@scope:registry``. The
    deployer's ``WEMCP_DEPLOYER_PIP_INDEX_URL`` / ``WEMCP_DEPLOYER_NPM_REGISTRY`` come first when set
    (they are what hosted installs use)."""
    env = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    pypi: list[str] = env.get("WEMCP_DEPLOYER_PIP_INDEX_URL", "").split()
    for name in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL",
                 "UV_INDEX"):
        pypi.extend(env.get(name, "").replace(",", " ").split())
    pip_files = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), home / ".pip/pip.conf",
                 home / ".config/pip/pip.conf"]
    if env.get("PIP_CONFIG_FILE"):
        pip_files.append(Path(env["PIP_CONFIG_FILE"]))
    pip_index = bool(env.get("PIP_INDEX_URL") or env.get("UV_INDEX_URL") or env.get("UV_DEFAULT_INDEX")
                     or env.get("WEMCP_DEPLOYER_PIP_INDEX_URL"))
    extra: list[str] = []
    for path in pip_files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in parser.sections():
            index = parser.get(section, "index-url", fallback="").split()
            pypi.extend(index)
            extra.extend(parser.get(section, "extra-index-url", fallback="").split())
            pip_index = pip_index or bool(index)
    if not pip_index:
        pypi += ["https://pypi.org/simple", "https://files.pythonhosted.org"]
    pypi += extra
    npm = [env.get("WEMCP_DEPLOYER_NPM_REGISTRY", ""), env.get("npm_config_registry", ""),
           env.get("NPM_CONFIG_REGISTRY", "")]
    scoped: dict[str, list[str]] = {}
    npm_files = [Path("/etc/npmrc"), Path("/usr/etc/npmrc"), home / ".npmrc"]
    if env.get("NPM_CONFIG_USERCONFIG"):
        npm_files.append(Path(env["NPM_CONFIG_USERCONFIG"]))
    for path in npm_files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, eq, value = line.partition("=")
            if eq and key.strip() == "registry":
                npm.append(value.strip())
            elif eq and key.strip().endswith(":registry"):  # @scope:registry=...
                scoped.setdefault("npm:" + key.strip().removesuffix(":registry"), []).append(value.strip())
    npm = [u for u in npm if u]
    if not npm:
        npm.append("https://registry.npmjs.org/")
    return {"pypi": [u for u in pypi if u], "npm": npm, **scoped}


def registry_hosts(environ: Mapping[str, str] | None = None, home: Path | None = None) -> set[str]:
    """Host names of the package registries pip, uv and npm are configured with here
    (:func:`registry_urls`, scoped npm registries included)."""
    return _hosts_of(u for urls in registry_urls(environ, home).values() for u in urls)


# ---- the policy ------------------------------------------------------------------------------------

def parse_allow(entries: str | Iterable[str]) -> tuple[set[str], set[str], list[Network]]:
    """(host names, domain suffixes, networks) of an allow-list; ``ValueError`` on a bad entry."""
    items = entries.split(",") if isinstance(entries, str) else list(entries)
    hosts: set[str] = set()
    suffixes: set[str] = set()
    nets: list[Network] = []
    for raw in items:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry[2:] if entry.startswith("*.") else entry
        if not name or any(c in name for c in "/:@ ?#[]") or name.startswith("."):
            raise ValueError(f"{raw.strip()!r} is neither a host name nor an IP address or CIDR")
        (suffixes if entry.startswith("*.") else hosts).add(name)
    return hosts, suffixes, nets


def literal(host: str) -> Address | None:
    """The IP address a host names literally (``[::1]``, ``fe80::1%eth0`` and ``10.0.0.1`` included);
    None for a DNS name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class EgressPolicy:
    """See the module docstring. One per process (``ServiceSettings.egress``); cheap to build."""

    def __init__(self, allow: str | Iterable[str] = "", *, registries: bool = True) -> None:
        self.hosts, self.suffixes, self.networks = parse_allow(allow)
        if registries:
            self.hosts |= registry_hosts()

    def add(self, entry: str) -> None:
        """Allow one more host, address or network (tests reaching their loopback servers)."""
        hosts, suffixes, nets = parse_allow([entry])
        self.hosts |= hosts
        self.suffixes |= suffixes
        self.networks.extend(nets)

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host == s or host.endswith("." + s) for s in self.suffixes)

    def refusal(self, host: str, address: str) -> EgressRefused | None:
        """The refusal of connecting to ``address`` (which ``host`` resolved to), or ``None``."""
        ip = literal(address)
        if ip is None:
            return EgressRefused(host, "not an IP address", address)
        why = address_refusal(ip)
        if why is None or any(ip.version == n.version and ip in n for n in self.networks):
            return None
        return EgressRefused(host, why, address)

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Resolve ``host`` once and check every address: all of them, in the resolver's order, or
        :class:`EgressRefused` if any one is refused (a name that mixes public and internal answers
        is not trusted with either)."""
        host = host.strip("[]")
        ip = literal(host)
        if ip is not None:
            pairs: list[tuple[int, str]] = [(int(socket.AF_INET6 if ip.version == 6 else socket.AF_INET), host)]
        else:
            pairs = await resolve(host, port)
            if not pairs:
                raise OSError(f"{host!r} does not resolve")
            if self.host_allowed(host):
                return pairs
        for _, address in pairs:
            refused = self.refusal(host, address)
            if refused is not None:
                # logged here, where every refusal is decided: host, kind and address, never the URL
                # (it may carry a key)
                log.warning("egress_refused", host=refused.host, reason=refused.reason, address=refused.address)
                raise refused
        return pairs

    def check_url(self, url: str) -> tuple[str, str, int]:
        """A user-supplied URL's shape: http(s), a host, a valid port, no credentials in it.
        Returns (scheme, host, port); ``ValueError`` with a reason. The address is checked when a
        connection is made (:meth:`resolve`), not here."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"must be an http or https URL, not {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the URL must not carry credentials; declare them as headers")
        return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)

    async def check(self, url: str) -> None:
        """Up-front check of a URL (at submission or deploy time, for a clear early answer):
        :meth:`check_url` and :meth:`resolve`. Not a substitute for the connect-time check, which
        the clients below always make."""
        _, host, port = self.check_url(url)
        await self.resolve(host, port)

    # -- asyncio protocols (the gateway's h1client) --------------------------------------------------
    async def create_connection(self, loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], host: str,
                                port: int, **kwargs: Any) -> tuple[Any, Any]:
        """``loop.create_connection`` to a checked address of ``host`` (the first that accepts);
        TLS keeps ``server_hostname`` = ``host``."""
        pairs = await self.resolve(host, port)
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("server_hostname", host)
        last: OSError | None = None
        for _, address in pairs:
            try:
                return await loop.create_connection(factory, address, port, **kwargs)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    # -- httpx2 --------------------------------------------------------------------------------------
    def transport(self, **kwargs: Any) -> Any:
        """An ``httpx2.AsyncHTTPTransport`` whose every new connection goes to a checked address.
        Never through an environment proxy (the proxy would resolve the name itself)."""
        import httpcore2
        import httpx2

        if kwargs.get("proxy") is not None:
            raise ValueError("an egress-checked transport cannot go through a proxy")
        transport = httpx2.AsyncHTTPTransport(**kwargs)
        pool = transport._pool
        if not isinstance(pool, httpcore2.AsyncConnectionPool):  # pragma: no cover (httpx2 changed)
            raise TypeError(f"unexpected httpx2 pool {type(pool).__name__}")
        pool._network_backend = _policy_backend(self)
        return transport

    def client(self, **kwargs: Any) -> Any:
        """An ``httpx2.AsyncClient`` on :meth:`transport`: no environment proxies, no redirects
        followed unless asked (each hop would be checked anyway: a new origin is a new connection)."""
        import httpx2

        kwargs.setdefault("follow_redirects", False)
        verify = kwargs.pop("verify", True)
        limits = kwargs.pop("limits", httpx2.Limits(max_connections=100, max_keepalive_connections=20))
        return httpx2.AsyncClient(transport=self.transport(verify=verify, limits=limits), trust_env=False, **kwargs)


def _policy_backend_class() -> type:
    """Built on first use: httpcore and anyio stay unimported in processes that never need them
    (every service imports this module through its settings)."""
    import anyio
    import httpcore2
    from httpcore2._backends.auto import AutoBackend

    class PolicyBackend(httpcore2.AsyncNetworkBackend):
        """httpcore's network backend with the policy in ``connect_tcp``: resolve, check, connect
        to the address (httpcore then starts TLS with the origin's host name)."""

        def __init__(self, policy: EgressPolicy) -> None:
            self.policy = policy
            self.inner = AutoBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                              local_address: str | None = None, socket_options: Any = None) -> Any:
            try:
                with anyio.fail_after(timeout):
                    pairs = await self.policy.resolve(host, port)
            except EgressRefused as exc:
                raise httpcore2.ConnectError(str(exc)) from exc
            except TimeoutError as exc:
                raise httpcore2.ConnectTimeout(f"resolving {host!r} timed out") from exc
            except OSError as exc:
                raise httpcore2.ConnectError(f"{host!r} does not resolve ({exc})") from exc
            last: Exception | None = None
            for _, address in pairs:
                try:
                    return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                        socket_options=socket_options)
                except httpcore2.ConnectError as exc:
                    last = exc
            assert last is not None
            raise last

        async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                      socket_options: Any = None) -> Any:
            raise httpcore2.ConnectError("Unix sockets are not an egress destination")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    return PolicyBackend


_backend_class: list[type] = []


def _policy_backend(policy: EgressPolicy) -> Any:
    if not _backend_class:
        _backend_class.append(_policy_backend_class())
    return _backend_class[0](policy)


# ---- headers ---------------------------------------------------------------------------------------

PLATFORM_PREFIX = "x-wemcp-"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
# Owned by the HTTP layer or by the gateway's MCP client; a declared value would fight the real one.
_OWNED = frozenset({"host", "content-length", "content-type", "expect", "forwarded", "x-forwarded-for",
                    "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "accept"})
_OWNED_PREFIXES = ("mcp-", "sec-", "proxy-")


def reserved_header(name: str) -> str | None:
    """Why ``name`` cannot be a declared header (remote headers, OpenAPI header parameters and
    security schemes), or ``None``. ``Authorization`` and ``Cookie`` stay allowed: they are how
    upstream APIs take keys."""
    low = name.strip().lower()
    if low.startswith(PLATFORM_PREFIX):
        return "X-WeMcp-* headers are the platform's own"
    if low in HOP_BY_HOP:
        return "hop-by-hop headers belong to one connection"
    if low in _OWNED or low.startswith(_OWNED_PREFIXES):
        return "this header is set by the platform's HTTP client"
    return None


def outbound(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Declared headers without the reserved ones (the gateway's second line, after the catalog's
    422). The platform's own credential for the deployer's bridge is added after this filter."""
    return [(k, v) for k, v in headers if reserved_header(k) is None]
