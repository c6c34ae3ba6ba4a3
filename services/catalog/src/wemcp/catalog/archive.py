"""Checks on an uploaded source archive before anything is stored.

The archive itself is read by the shared strict reader (``wemcp.common.archives``), the one the
deployer extracts with: format from the bytes, no polyglots or hidden data, no absolute paths,
``..``, links or special files, bounded entries and measured expansion. Then the dependencies the
deployer would install from it on the host (``requirements.txt`` of a Python archive,
``package.json`` of a Node one) must all be plain registry packages (``wemcp.common.requirements``).
Every refusal is a 422 on the ``archive`` field naming what is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass

from wemcp.catalog.normalize import field_error
from wemcp.common.archives import ArchiveLimits, ArchiveRefused, read_archive
from wemcp.common.requirements import DependencyRefused, check_package_json, parse_requirements_txt


@dataclass
class CheckedArchive:
    sha256: str
    size: int
    expanded: int
    entries: int
    format: str


def check_archive(data: bytes, *, max_expanded: int, max_entries: int, runtime: str | None = None) -> CheckedArchive:
    try:
        got = read_archive(data, ArchiveLimits(max_expanded=max_expanded, max_entries=max_entries),
                           keep=("requirements.txt", "package.json"))
    except ArchiveRefused as exc:
        raise field_error("archive", str(exc), exc.kind) from None
    try:
        if runtime == "python" and "requirements.txt" in got.files:
            parse_requirements_txt(got.files["requirements.txt"].decode("utf-8"))
        if runtime == "node" and "package.json" in got.files:
            manifest = json.loads(got.files["package.json"])
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            check_package_json(manifest)
    except DependencyRefused as exc:
        raise field_error("archive", str(exc), "unsafe_requirement") from None
    except ValueError as exc:  # bad UTF-8 or JSON
        raise field_error("archive", f"cannot read the archive's dependency file: {str(exc)[:100]}",
                          "invalid_dependency_file") from None
    return CheckedArchive(got.sha256, got.size, got.expanded, got.entries, got.format)
