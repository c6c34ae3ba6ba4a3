"""What a submitted server may ask the host to install: registry packages by name and version only.

The deployer installs dependencies on the host, outside the sandbox, with wheels only (no build
backend runs) and npm lifecycle scripts off. What is left to refuse is everything that would make
the installer fetch or read something other than a registry package, or run something: options
(``-e``, ``-r``, ``--index-url``, ``-f``, ``--trusted-host``...), paths (``./pkg``, ``/x``,
``file:``, a name that looks like ``pkg-1.0.tar.gz``, which uv treats as a local file and builds),
URLs and VCS references (``git+https://``, ``name @ https://...whl``). The catalog refuses them at
submission (422) and the deployer again before it installs (a spec can reach it by other routes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from wemcp.common.events.spec import NPM_NAME

# Names the installers would read as a local file rather than a project name.
_FILE_LIKE = re.compile(r"\.(whl|zip|tar|tgz|tar\.gz|tar\.bz2|tbz|tar\.xz|txz|egg|exe)$", re.IGNORECASE)
_PLAIN = "only plain requirements such as name==1.2 (with extras and markers) are installed"


class DependencyRefused(ValueError):
    """One dependency line is not a plain registry requirement; the message names it."""

    def __init__(self, where: str, line: str, reason: str) -> None:
        super().__init__(f"{where}: {line[:200]!r} {reason}")
        self.where = where
        self.line = line


def check_requirement(line: str, where: str = "requirement") -> str:
    """A PEP 508 requirement naming a registry package (extras, versions and markers allowed), in
    its normal form; anything else raises ``DependencyRefused``."""
    text = line.strip()
    if text.startswith("-"):
        raise DependencyRefused(where, text, f"is an installer option; {_PLAIN}")
    try:
        req = Requirement(text)
    except InvalidRequirement:
        raise DependencyRefused(where, text, "is not a plain requirement: paths, URLs and VCS references are "
                                f"not installed on the host; {_PLAIN}") from None
    if req.url:
        raise DependencyRefused(where, text, f"installs from a URL (name @ url); {_PLAIN}")
    if _FILE_LIKE.search(req.name) or "/" in text.split(";")[0]:
        raise DependencyRefused(where, text, f"looks like a file, not a project name; {_PLAIN}")
    return str(req)


def parse_requirements_txt(text: str, where: str = "requirements.txt") -> list[str]:
    """The requirements of a requirements.txt, each checked (``check_requirement``); comments, blank
    lines and backslash continuations as pip reads them. Errors name the line number."""
    out: list[str] = []
    logical, first = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not logical:
            first = number
        # pip: "#" starts a comment at the start of a line or after whitespace
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        if logical.strip():
            out.append(check_requirement(logical, f"{where} line {first}"))
        logical = ""
    if logical.strip():
        out.append(check_requirement(logical, f"{where} line {first}"))
    return out


# npm: a dependency's spec must be a version, a range or a dist-tag (optionally behind an npm: alias).
# Everything else (file:, link:, git..., http(s) tarballs, github shorthand user/repo, paths) is
# refused: paths read host files into the package, URLs make the host fetch anything, and git
# dependencies run the git binary (which a project .npmrc can name) and their own prepare scripts.
# versions, ranges (^ ~ < > = || x * - spaces) and dist-tags; no ":" or "/" (URLs, git, user/repo),
# and no leading "." (npm reads ".", "..", ".x" as a directory)
_NPM_RANGE = re.compile(r"^(?!\.)[0-9A-Za-z.^~<>=|*+ \-]*$")
NPM_DEPENDENCY_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_NPM_NOT_REGISTRY = ("is not a registry version or range: paths, URLs, git and GitHub references are not "
                     "installed on the host")


def _npm_registry_spec(spec: str) -> bool:
    text = spec.strip()
    if text.startswith("npm:"):  # an alias: npm:real-name@range
        real, at, rng = text[4:].rpartition("@")
        if not at or not real:
            real, rng = text[4:], ""
        return bool(NPM_NAME.match(real) and _NPM_RANGE.match(rng))
    return bool(_NPM_RANGE.match(text))


def check_package_json(manifest: Mapping[str, Any], where: str = "package.json") -> None:
    """Every dependency (and override) of a package.json must come from the registry."""
    for fld in NPM_DEPENDENCY_FIELDS:
        deps = manifest.get(fld) or {}
        if not isinstance(deps, Mapping):
            raise DependencyRefused(where, fld, "must be an object of name: version")
        for name, spec in deps.items():
            if not NPM_NAME.match(str(name)):
                raise DependencyRefused(f"{where} {fld}", str(name), "is not a valid npm package name")
            if not isinstance(spec, str) or not _npm_registry_spec(spec):
                raise DependencyRefused(f"{where} {fld}.{name}", str(spec), _NPM_NOT_REGISTRY)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif not isinstance(node, str) or not (node.startswith("$") or _npm_registry_spec(node)):
            raise DependencyRefused(f"{where} {path}", str(node), _NPM_NOT_REGISTRY)

    walk(manifest.get("overrides") or {}, "overrides")
