"""The service skeleton holds (docs/architecture.md, "The service skeleton"): in a converted service
the modules that declare routes (an ``APIRouter``) hold no SQL and do not reach ``app.state`` by
hand; the statements live in ``repository.py``, process state comes through ``deps.py``.

Services not converted yet are listed in ``NOT_CONVERTED``, so this file says what is left; a listed
service whose route modules are clean fails too, so the list only shrinks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"

# service -> what is still in the way
NOT_CONVERTED = {
    "agents": "SQL in api.py; no repository.py",
    "catalog": "SQL in api.py; no repository.py",
    "crawler": "SQL in api.py; no repository.py",
    "deployer": "SQL in api.py; no repository.py",
    "gateway": "SQL in api.py; no repository.py",
    "goods": "SQL in api.py; no repository.py",
    "ratelimit": "api.py calls the repository, bypassing service.py, and reaches app.state; no deps.py",
}

# Statement constructors and session calls; a route decorator (``@router.delete(...)``) is no SQL, nor
# is ``x.delete(...)`` in general (Redis has one); ``sqlalchemy.delete`` called bare is caught.
_CONSTRUCTORS = {"select", "insert", "update", "delete", "text", "pg_insert", "union", "exists"}
_SESSION_CALLS = {"execute", "scalar", "scalars", "stream", "stream_scalars"}


def sql_in(source: str) -> list[str]:
    """Where ``source`` builds or runs SQL: ``line: what``."""
    tree = ast.parse(source)
    decorators = {
        id(d) for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for d in node.decorator_list
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            names = [a.name for a in node.names if a.name in _CONSTRUCTORS | {"func"}]
            if names:
                found.append(f"{node.lineno}: imports {', '.join(names)} from {node.module}")
        if not isinstance(node, ast.Call) or id(node) in decorators:
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id in _CONSTRUCTORS:
            found.append(f"{node.lineno}: {fn.id}(...)")
        elif isinstance(fn, ast.Attribute) and (fn.attr in _SESSION_CALLS or fn.attr in _CONSTRUCTORS - {"delete"}):
            found.append(f"{node.lineno}: .{fn.attr}(...)")
        elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "func":
            found.append(f"{node.lineno}: func.{fn.attr}(...)")
    return found


def state_by_hand(source: str) -> list[str]:
    """Where ``source`` reaches ``<something>.app.state`` instead of declaring a dependency."""
    return [
        f"{node.lineno}: .app.state" for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr == "state"
        and isinstance(node.value, ast.Attribute) and node.value.attr == "app"
    ]


def _package(service: str) -> Path:
    return SERVICES / service / "src" / "wemcp" / service


def route_modules(service: str) -> list[Path]:
    """The modules of a service that declare routes."""
    return sorted(p for p in _package(service).glob("*.py") if "APIRouter(" in p.read_text())


def skeleton_problems(service: str) -> list[str]:
    """What keeps ``service`` from the skeleton; empty when it has it."""
    package = _package(service)
    problems = [f"{service}: no {name}" for name in ("repository.py", "deps.py") if not (package / name).is_file()]
    modules = route_modules(service)
    if not modules:
        problems.append(f"{service}: no module declares routes")
    for m in modules:
        source = m.read_text()
        problems += [f"{m.relative_to(ROOT)}:{where}" for where in sql_in(source) + state_by_hand(source)]
    return problems


ALL = sorted(p.name for p in SERVICES.iterdir() if _package(p.name).is_dir())
CONVERTED = [s for s in ALL if s not in NOT_CONVERTED]


def test_every_service_is_known() -> None:
    assert set(NOT_CONVERTED) <= set(ALL), "NOT_CONVERTED names a service that does not exist"
    assert "auth" in CONVERTED


@pytest.mark.parametrize("service", CONVERTED)
def test_converted_service_has_the_skeleton(service: str) -> None:
    assert skeleton_problems(service) == [], "SQL or app.state above the repository, or a file missing"


@pytest.mark.parametrize("service", sorted(NOT_CONVERTED))
def test_not_converted_list_only_shrinks(service: str) -> None:
    """A service listed as not converted that has the skeleton after all: take it off
    ``NOT_CONVERTED`` so the check keeps it that way."""
    assert skeleton_problems(service) != [], f"{service} has the skeleton: remove it from NOT_CONVERTED"


def test_the_scanner_sees_sql_and_not_routes() -> None:
    src = '''
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

@router.delete("/x")
async def handler(s: AsyncSession) -> None:
    await s.execute(select(User).where(User.id == 1))
    await s.scalar(sa.update(User).values(name="n"))
    n = func.count(User.id)
    await redis.delete("k")
'''
    found = sql_in(src)
    kinds = {f.split(": ", 1)[1] for f in found}
    assert kinds == {
        "imports select from sqlalchemy", "select(...)", ".execute(...)", ".scalar(...)", ".update(...)",
        "func.count(...)",
    }
    assert sql_in('@router.delete("/x")\nasync def h() -> None:\n    return None\n') == []
    assert state_by_hand("st = request.app.state.runtime") == ["1: .app.state"]
    assert state_by_hand("st = state(request)") == []
