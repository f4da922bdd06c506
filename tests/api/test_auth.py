"""Bearer tokens: clients see their own requests, the admin sees all and creates none."""

from __future__ import annotations

from tests.api.conftest import ADMIN_TOKEN, EXPORT, Api, running


async def test_missing_bad_and_revoked_tokens_are_401(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    path = f"/v1/requests/{request_id}"

    missing = await api.call("GET", path)
    assert missing.problem(401)["type"].endswith("/unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")

    for header in ("Bearer nope", "Basic dXNlcjpwYXNz", "Bearer", f"Token {token}"):
        reply = await api.call("GET", path, headers={"Authorization": header})
        reply.problem(401)
        assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
        assert token not in str(reply.body)

    assert (await api.call("GET", path, token)).status == 200
    await api.service.revoke_client("copilot")
    # Revoked means refused on the very next call: no cache stands in between.
    assert (await api.call("GET", path, token)).status == 401
    assert (await api.call("POST", "/v1/requests", token, json=EXPORT)).status == 401


async def test_a_client_cannot_see_or_touch_another_clients_requests(api: Api) -> None:
    mine = await api.client("copilot")
    theirs = await api.client("other-bot")
    request_id = await api.create(mine)
    for method, path in (
        ("GET", f"/v1/requests/{request_id}"),
        ("GET", f"/v1/requests/{request_id}/wait?timeout=0"),
        ("POST", f"/v1/requests/{request_id}/cancel"),
    ):
        reply = await api.call(method, path, theirs)
        assert reply.problem(404)["type"].endswith("/not_found"), path
    history = await api.call("GET", "/v1/requests", theirs)
    assert history.status == 200 and history.body == {"items": [], "next_cursor": None}
    still = await api.call("GET", f"/v1/requests/{request_id}", mine)
    assert still.body["status"] == "pending"


async def test_the_admin_reads_everything_but_creates_and_cancels_nothing(api: Api) -> None:
    first = await api.create(await api.client("copilot"))
    second = await api.create(await api.client("other-bot"))
    history = await api.call("GET", "/v1/requests", ADMIN_TOKEN)
    assert [item["id"] for item in history.body["items"]] == [second, first]
    for request_id in (first, second):
        assert (await api.call("GET", f"/v1/requests/{request_id}", ADMIN_TOKEN)).status == 200
        waited = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout=0", ADMIN_TOKEN)
        assert waited.status == 200
    create = await api.call("POST", "/v1/requests", ADMIN_TOKEN, json=EXPORT)
    assert create.problem(403)["type"].endswith("/forbidden")
    cancel = await api.call("POST", f"/v1/requests/{first}/cancel", ADMIN_TOKEN)
    cancel.problem(403)


async def test_without_an_admin_token_there_is_no_admin(database_url: str) -> None:
    async with running(database_url, admin_token=None) as api:
        reply = await api.call("GET", "/v1/requests", headers={"Authorization": "Bearer "})
        reply.problem(401)
        reply = await api.call("GET", "/v1/requests", ADMIN_TOKEN)
        reply.problem(401)
