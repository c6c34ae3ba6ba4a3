"""``GET /internal/auth/users/{id}/identities``: the linked provider accounts the catalog checks
``io.github.<login>/`` names against — the platform's service credential only, no token or e-mail."""

from __future__ import annotations

import uuid

from wemcp.auth.models import User, UserIdentity
from wemcp.common.trust import platform_headers


async def test_linked_identities_for_services_only(auth_app, client) -> None:
    uid = uuid.uuid4()
    async with auth_app.state.runtime.sessions() as s, s.begin():
        s.add(User(id=uid, login="octo", avatar_url="", email="octo@example.com"))
        await s.flush()
        s.add(UserIdentity(user_id=uid, provider="github", subject="583231", login="octocat",
                           email="octo@example.com", profile={"id": 583231}))
        s.add(UserIdentity(user_id=uid, provider="google", subject="g-1", login="octo", profile={}))
    path = f"/internal/auth/users/{uid}/identities"
    r = await client.get(path, headers=platform_headers("auth", issuer="catalog"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["login"] == "octo" and body["disabled"] is False
    assert sorted((i["provider"], i["subject"], i["login"]) for i in body["identities"]) == [
        ("github", "583231", "octocat"), ("google", "g-1", "octo")]
    assert "octo@example.com" not in r.text  # never an e-mail address
    # no credential, a forged one, or one minted for another service: refused
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers={"x-wemcp-assertion": "forged"})).status_code == 401
    assert (await client.get(path, headers=platform_headers("catalog", issuer="catalog"))).status_code == 401
    # an unknown user: 404; a malformed id: 422
    r = await client.get(f"/internal/auth/users/{uuid.uuid4()}/identities", headers=platform_headers("auth"))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/internal/auth/users/x/identities", headers=platform_headers("auth"))).status_code == 422
