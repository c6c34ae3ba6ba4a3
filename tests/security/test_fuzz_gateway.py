"""A seeded, bounded schemathesis run over the gateway's merged ``/openapi.json`` (every public
operation of every service) as an anonymous caller, a signed-in user and an admin: no answer may be
a 5xx.

Deterministic: Hypothesis runs derandomized (the seed is derived from the test, not drawn), with no
example database and no shrinking, so the same cases are sent on every run; bounded: ``EXAMPLES``
generated cases per operation and generation mode (schema-conforming and schema-violating data),
each sent once per caller (~2,000 requests over the ~80 operations). On commit 037ecd7 this run
found 87 distinct (operation, caller) 500s over 29 operations, all from control characters in
path parameters (the HTTP client refused the URL the gateway built from the decoded path).

A failure lists every distinct (operation, caller, status) with a curl command that reproduces it.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.security.platform_kit import platform, superadmin_key, user_key

# the platform's start is part of the first test here (a minute or more on a loaded 2-core machine):
# a wider guard than the suite's default 300 s, not a timing assertion
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLES = 5  # per operation and generation mode; each case is sent as all three callers
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.fixture(scope="module")
async def callers(request) -> dict[str, dict[str, str]]:
    """The three callers' headers: none, a plain user's API key, a superadmin's API key (made the
    way ``make admin`` and auth's use cases make them)."""
    stack = platform(request.config)
    admin = superadmin_key(stack, "fuzz-admin")
    _, user = await user_key(stack, "fuzz-user")
    return {"anonymous": {}, "user": {"Authorization": f"Bearer {user}"},
            "admin": {"Authorization": f"Bearer {admin}"}}


def test_no_operation_answers_5xx(request, callers):
    stack = platform(request.config)
    failures, sent, operations = fuzz(f"http://127.0.0.1:{stack.gateway_port}", callers)
    report = "\n".join(f"{label} as {who}: {status}\n    {detail}"
                       for (label, who, status), detail in sorted(failures.items()))
    assert not failures, f"{len(failures)} distinct 5xx answers in {sent} requests:\n{report}"
    assert sent >= operations * len(callers), (sent, operations)


def fuzz(base: str, callers: dict[str, dict[str, str]]) -> tuple[dict[tuple[str, str, int], str], int, int]:
    """Every operation of the gateway's merged document, ``EXAMPLES`` cases per generation mode, each
    sent as every caller. Returns the distinct 5xx answers (with a curl command each), the number of
    requests sent and the number of operations."""
    doc = requests.get(f"{base}/openapi.json", timeout=30).json()
    assert not doc["info"].get("x-unavailable-services"), doc["info"]
    schema = schemathesis.openapi.from_dict(doc)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) > 50, "the merged document lost most operations"
    failures: dict[tuple[str, str, int], str] = {}
    sent = 0
    with requests.Session() as session:
        for op in operations:
            for mode in MODES:
                def send(case: Any) -> None:
                    nonlocal sent
                    for who, headers in callers.items():
                        r = case.call(base_url=base, session=session, headers=dict(headers), timeout=30,
                                      allow_redirects=False)
                        sent += 1
                        if r.status_code >= 500:
                            failures.setdefault((case.operation.label, who, r.status_code),
                                                f"{r.text[:300]}\n    {case.as_curl_command(headers=headers)}")

                run = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                               phases=[Phase.explicit, Phase.generate], verbosity=Verbosity.quiet,
                               suppress_health_check=list(HealthCheck))(
                    given(case=op.as_strategy(generation_mode=mode))(send))
                try:
                    run()
                except Unsatisfiable:
                    # nothing in this operation can be made invalid (no parameters, no body)
                    assert mode is GenerationMode.NEGATIVE, op.label
    return failures, sent, len(operations)
