"""The checks of what a submitted server may ask to install (wemcp.common.requirements): plain
registry requirements are kept in their normal form; options, paths, URLs, VCS references and
file-like names are refused, naming the line."""

from __future__ import annotations

import pytest

from wemcp.common.requirements import (
    DependencyRefused,
    check_package_json,
    check_requirement,
    parse_requirements_txt,
)


def test_one_requirement() -> None:
    normal = 'Foo_Bar[x]>=1.0; python_version < "3.13"'
    assert check_requirement("  Foo_Bar[x] >= 1.0 ; python_version<'3.13' ") == normal
    assert check_requirement("mcp==2.3.0") == "mcp==2.3.0"
    for line, reason in (("--index-url=http://x", "installer option"), ("x @ https://h/x.whl", "URL"),
                         ("./pkg", "plain requirement"), ("a/b", "plain requirement"), ("pkg-1.0.tar.gz", "file"),
                         ("x.whl", "file")):
        with pytest.raises(DependencyRefused, match=reason) as e:
            check_requirement(line, "spec packages[0]")
        assert str(e.value).startswith("spec packages[0]: ") and e.value.line == line


def test_requirement_lines() -> None:
    assert parse_requirements_txt("# deps\nmcp==2.3.0  # pinned\nfoo[bar]>=1; python_version < '3.12'\n"
                                  "long\\\n  ==1.0\n\n") == ["mcp==2.3.0", 'foo[bar]>=1; python_version < "3.12"',
                                                             "long==1.0"]
    for line in ("-e .", "-r x.txt", "--index-url http://x", "-f ./w", "--trusted-host x", "./x", "/x", ".",
                 "file:x", "git+https://h/x.git", "x @ https://h/x.whl", "https://h/x.whl", "x-1.0.tar.gz",
                 "x.whl", "mcp==1 --hash=sha256:00"):
        with pytest.raises(DependencyRefused, match=r"requirements\.txt line 2"):
            parse_requirements_txt(f"mcp\n{line}\n")


def test_package_json_dependencies() -> None:
    check_package_json({"dependencies": {"a": "^1.2.0", "b": "latest", "c": "1.x || >=2.5.0", "d": "npm:e@^1"},
                        "overrides": {"a": {"f": "1.0.0"}, "g": "$a"}})
    for spec in ("file:../x", "link:x", "git+https://h/x.git", "github:u/r", "u/r", "https://h/x.tgz", "..", "./x",
                 "npm:e@file:x"):
        with pytest.raises(DependencyRefused):
            check_package_json({"dependencies": {"a": spec}})
        with pytest.raises(DependencyRefused):
            check_package_json({"devDependencies": {"a": spec}})
    with pytest.raises(DependencyRefused):
        check_package_json({"overrides": {"a": {"b": "git://h/x"}}})
