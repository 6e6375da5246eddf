"""Failed logins are throttled per user, and password hashing does not starve other requests
(issue 9, A.5).

Lockout is Keystone's ``[security_compliance] lockout_failure_attempts`` (10 by default here)
and ``lockout_duration``: the expiry of a lockout and two servers sharing one count are in
tests/unit/test_identity_lockout.py.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid

import httpx

TOKENS = "/identity/v3/auth/tokens"
ATTEMPTS = 10  # [security_compliance] lockout_failure_attempts default


def login_body(user: str, password: str, project: str | None = None) -> dict:
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": "Default"}}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return {"auth": auth}


def login(cloud, user: str, password: str, project: str | None = None) -> httpx.Response:
    return cloud.request("POST", TOKENS, json=login_body(user, password, project))


def test_bad_logins_lock_the_user_until_an_admin_enables_it(cloud) -> None:
    user = cloud.new_project()
    for _ in range(ATTEMPTS):
        response = login(cloud, user.user_name, "wrong")
        assert response.status_code == 401
        assert response.json()["error"]["message"] == \
            "The request you have made requires authentication."
    # locked: even the right password is refused, with Keystone's message
    response = login(cloud, user.user_name, user.password, user.project_name)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == {
        "code": 401, "title": "Unauthorized",
        "message": f"The account is locked for user: {user.user_id}."}
    # by id too
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "id": user.user_id, "password": user.password}}}}}
    assert cloud.request("POST", TOKENS, json=body).status_code == 401

    # an admin enabling the user lifts the lockout (Keystone's rule)
    response = cloud.request("PATCH", f"/identity/v3/users/{user.user_id}",
                             token=cloud.admin_token, json={"user": {"enabled": True}})
    assert response.status_code == 200, response.text
    assert login(cloud, user.user_name, user.password, user.project_name).status_code == 201


def test_a_successful_login_resets_the_count(cloud) -> None:
    user = cloud.new_project()
    for _ in range(2):
        for _ in range(ATTEMPTS - 1):
            assert login(cloud, user.user_name, "wrong").status_code == 401
        response = login(cloud, user.user_name, user.password, user.project_name)
        assert response.status_code == 201, response.text


def test_unknown_users_are_not_locked(cloud) -> None:
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    for _ in range(ATTEMPTS + 1):
        response = login(cloud, name, "wrong")
        assert response.status_code == 401
        assert "locked" not in response.json()["error"]["message"]


# --- password hashing does not starve token-authenticated requests --------------------------

STORM = 40
# The GETs during the storm: a quiet machine answers in ~2 ms; the old code, whose bcrypt
# checks took the shared threads, gave a p90 of several hundred ms and a max near 1 s on 2
# cores. P90 and WORST hold on the loaded 2-core machine and still fail the old code at p90.
# (bench/auth.py measures the figure itself.)
P90 = 0.25
WORST = 2.0


def test_token_requests_keep_their_threads_during_a_login_storm(cloud) -> None:
    """40 clients send bad logins back to back (unknown users: bcrypt runs against the dummy
    hash and the lockout never makes them cheap). Meanwhile a token-authenticated GET keeps
    answering quickly: before, every one of the 40 bcrypt checks took a thread of the shared
    pool and the CPU with it, and the GETs' p90 was several hundred ms (max ~1 s on 2 cores)."""
    token = cloud.demo_token
    stop = threading.Event()
    answered: list[int] = []

    def storm() -> None:
        body = login_body(f"nobody-{uuid.uuid4().hex[:8]}", "wrong")
        with httpx.Client(base_url=cloud.url, timeout=300) as http:
            while not stop.is_set():
                answered.append(http.post(TOKENS, json=body).status_code)

    threads = [threading.Thread(target=storm, daemon=True) for _ in range(STORM)]
    for thread in threads:
        thread.start()
    samples = []
    try:
        time.sleep(2.0)  # every storm client has a login in flight
        with httpx.Client(base_url=cloud.url, timeout=60,
                          headers={"X-Auth-Token": token}) as http:
            for _ in range(30):
                start = time.perf_counter()
                response = http.get("/networking/v2.0/networks")
                samples.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert answered and set(answered) == {401}
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    assert max(samples) < WORST, samples
    assert p90 < P90, (f"p90 {p90 * 1000:.0f} ms, median "
                        f"{statistics.median(samples) * 1000:.0f} ms")
