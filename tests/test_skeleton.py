"""The service skeleton holds in every service (docs/architecture.md §5b): no module above the
repository builds or runs SQL (the statements live in ``repository.py`` or a ``repository/`` package;
``models.py`` declares the tables and ``migrations/`` changes them), the modules that declare routes
(an ``APIRouter``) do not reach ``app.state`` by hand (process state comes through ``deps.py``),
every route that answers with data declares a response model, and test modules are named after the
modules they test. A new service is checked the moment its folder exists."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"

# Statement constructors called bare or as ``sa.<name>``, and session calls with a statement. Not SQL:
# a route decorator (``@router.delete(...)``), ``dict.update``, ``Path.exists``, ``pipeline.execute()``.
_CONSTRUCTORS = {"select", "insert", "update", "delete", "text", "pg_insert", "union", "exists"}
_SQLALCHEMY_NAMES = {"sa", "sqlalchemy", "postgresql"}
_SESSION_CALLS = {"execute", "scalar", "scalars", "stream_scalars"}


def sql_in(source: str) -> list[str]:
    """Where ``source`` builds or runs SQL: ``line: what``."""
    tree = ast.parse(source)
    decorators = {
        id(d)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for d in node.decorator_list
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
        elif isinstance(fn, ast.Attribute) and fn.attr in _SESSION_CALLS and node.args:
            found.append(f"{node.lineno}: .{fn.attr}(...)")
        elif (
            isinstance(fn, ast.Attribute)
            and fn.attr in _CONSTRUCTORS
            and isinstance(fn.value, ast.Name)
            and fn.value.id in _SQLALCHEMY_NAMES
        ):
            found.append(f"{node.lineno}: {fn.value.id}.{fn.attr}(...)")
        elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "func":
            found.append(f"{node.lineno}: func.{fn.attr}(...)")
    return found


def state_by_hand(source: str) -> list[str]:
    """Where ``source`` reaches ``<something>.app.state`` instead of declaring a dependency."""
    return [
        f"{node.lineno}: .app.state"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr == "state"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "app"
    ]


def _package(service: str) -> Path:
    return SERVICES / service / "src" / "wemcp" / service


def modules(service: str) -> list[Path]:
    return sorted(p for p in _package(service).rglob("*.py") if "migrations" not in p.parts)


def route_modules(service: str) -> list[Path]:
    """The modules of a service that declare routes."""
    return [p for p in modules(service) if "APIRouter(" in p.read_text()]


BELOW_THE_SERVICE = {"repository.py", "models.py"}  # where SQL belongs


def below_the_service(package: Path, module: Path) -> bool:
    """``repository.py`` and ``models.py``, or a module of a ``repository/`` package (a service with
    many queries splits its repository by subject: ``repository/search.py``, ...)."""
    return module.name in BELOW_THE_SERVICE or "repository" in module.relative_to(package).parts[:-1]


def skeleton_problems(service: str) -> list[str]:
    """What keeps ``service`` from the skeleton; empty when it has it."""
    package = _package(service)
    problems = [] if (package / "deps.py").is_file() else [f"{service}: no deps.py"]
    owns_tables = (package / "models.py").is_file()  # tables → SQL → a repository
    has_repository = (package / "repository.py").is_file() or (package / "repository" / "__init__.py").is_file()
    if owns_tables and not has_repository:
        problems.append(f"{service}: no repository.py")
    routes = route_modules(service)
    if not routes:
        problems.append(f"{service}: no module declares routes")
    for m in modules(service):
        source = m.read_text()
        found = [] if below_the_service(package, m) else sql_in(source)
        found += state_by_hand(source) if m in routes else []
        problems += [f"{m.relative_to(ROOT)}:{where}" for where in found]
    return problems


ALL = sorted(p.name for p in SERVICES.iterdir() if _package(p.name).is_dir())


def test_every_service_is_checked() -> None:
    assert {"agents", "auth", "catalog", "crawler", "deployer", "gateway", "goods", "ratelimit"} <= set(ALL)


@pytest.mark.parametrize("service", ALL)
def test_service_has_the_skeleton(service: str) -> None:
    assert skeleton_problems(service) == [], "SQL or app.state above the repository, or a file missing"


def untyped_routes(service: str) -> list[str]:
    """The service's own routes that answer with data but declare no response model (a route that
    returns a ``Response`` it builds has none, and needs none)."""
    spec = importlib.import_module(f"wemcp.{service}.main").SPEC
    found = []
    for router in spec.routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.endpoint.__module__.startswith(f"wemcp.{service}."):
                continue
            model = route.response_model
            if model is not None and not (inspect.isclass(model) and issubclass(model, BaseModel)):
                found.append(f"{sorted(route.methods)} {route.path} -> {model}")
    return found


@pytest.mark.parametrize("service", ALL)
def test_service_routes_have_response_models(service: str) -> None:
    assert untyped_routes(service) == []


def test_the_scanner_sees_sql_and_not_routes() -> None:
    src = """
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

@router.delete("/x")
async def handler(s: AsyncSession) -> None:
    await s.execute(select(User).where(User.id == 1))
    await s.scalar(sa.update(User).values(name="n"))
    n = func.count(User.id)
    await redis.delete("k")
    headers.update({"a": "b"})
    await pipe.execute()
"""
    found = sql_in(src)
    kinds = {f.split(": ", 1)[1] for f in found}
    assert kinds == {
        "imports select from sqlalchemy",
        "select(...)",
        ".execute(...)",
        ".scalar(...)",
        "sa.update(...)",
        "func.count(...)",
    }
    assert sql_in('@router.delete("/x")\nasync def h() -> None:\n    return None\n') == []
    assert state_by_hand("st = request.app.state.runtime") == ["1: .app.state"]
    assert state_by_hand("st = state(request)") == []


# Tests mirror the modules they test: ``services/<s>/tests/test_<module>.py`` or
# ``test_<module>_<topic>.py``, where ``<module>`` is a module or subpackage of ``wemcp.<s>``
# (``test_search_planning.py`` tests ``search.py``; ``test_migrations_reseal.py`` a migration). A
# reader looking for the tests of ``x.py`` finds them by name. The same holds for ``libs/``.
LIBS = ROOT / "libs"


def module_names(package: Path) -> set[str]:
    """What a test module may be named after: the modules and subpackages of ``package``, and its
    ``migrations`` (a folder alembic reads, not a package: ``test_migrations_<topic>.py``)."""
    names = {p.stem for p in package.rglob("*.py") if p.name != "__init__.py" and "versions" not in p.parts}
    names |= {p.name for p in package.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()}
    # ``migrations/`` is no package (alembic loads it by path); its tests are test_migrations_<topic>.py
    return names | ({"migrations"} if (package / "migrations").is_dir() else set())


def misnamed_tests(tests: Path, package: Path) -> list[str]:
    names = module_names(package)
    return sorted(
        str(t.relative_to(tests))
        for t in tests.rglob("test_*.py")
        if not any(t.stem == f"test_{n}" or t.stem.startswith(f"test_{n}_") for n in names)
    )


def _lib_packages() -> list[tuple[Path, Path]]:
    return [
        (lib / "tests", pkg)
        for lib in sorted(LIBS.iterdir())
        if (lib / "tests").is_dir()
        for pkg in (lib / "src" / "wemcp").iterdir()
        if pkg.is_dir()
    ]


@pytest.mark.parametrize("service", ALL)
def test_service_tests_mirror_its_modules(service: str) -> None:
    assert misnamed_tests(SERVICES / service / "tests", _package(service)) == [], (
        "name each test module test_<module>[_<topic>].py after the module it tests"
    )


@pytest.mark.parametrize(("tests", "package"), _lib_packages(), ids=lambda p: p.name)
def test_library_tests_mirror_its_modules(tests: Path, package: Path) -> None:
    assert misnamed_tests(tests, package) == []


def test_the_naming_rule_sees_a_scenario_name(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "events").mkdir(parents=True)
    (pkg / "migrations" / "versions").mkdir(parents=True)
    for f in ("__init__.py", "search.py", "events/__init__.py", "migrations/env.py"):
        (pkg / f).write_text("")
    tests = tmp_path / "tests"
    tests.mkdir()
    for f in (
        "test_search.py",
        "test_search_planning.py",
        "test_events_spec.py",
        "test_searching.py",
        "test_flows.py",
        "test_migrations_reseal.py",
    ):
        (tests / f).write_text("")
    assert misnamed_tests(tests, pkg) == ["test_flows.py", "test_searching.py"]


def test_the_naming_rule_takes_migration_tests(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "migrations" / "versions").mkdir(parents=True)
    for f in ("__init__.py", "migrations/env.py", "migrations/versions/0001_x.py"):
        (pkg / f).write_text("")
    tests = tmp_path / "tests"
    tests.mkdir()
    for f in ("test_migrations_backfill.py", "test_0001_x.py", "test_versions_x.py"):
        (tests / f).write_text("")
    assert misnamed_tests(tests, pkg) == ["test_0001_x.py", "test_versions_x.py"]
