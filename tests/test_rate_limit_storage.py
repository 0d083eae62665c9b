"""The rate limiter's Redis storage (``rate_limit_storage``): one Redis round trip per limited
request instead of three, the same X-RateLimit headers, the same in-memory fallback."""

from __future__ import annotations

import time

from redis import Redis

from dispatched.extensions import limiter
from dispatched.rate_limit_storage import CountingRedisStorage
from tests.conftest import make_app


def test_the_app_uses_it(app):
    assert isinstance(limiter.storage, CountingRedisStorage)


def test_one_round_trip_for_the_limit_and_the_same_headers(app, client, make_team, monkeypatch):
    team = make_team("tiny_rate")  # 5 a minute
    client.get("/api/usage", headers=team.headers)  # the key is cached from now on
    commands: list[tuple[str, str]] = []
    real = Redis.execute_command

    def counting(self, *args, **kwargs):
        commands.append((str(args[0]), str(args[1]) if len(args) > 1 else ""))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", counting)
    resets = set()
    for remaining in (3, 2, 1, 0):
        commands.clear()
        r = client.get("/api/usage", headers=team.headers)
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["X-RateLimit-Remaining"] == str(remaining)
        resets.add(int(r.headers["X-RateLimit-Reset"]))
        limiter_calls = [c for c in commands if c[0] != "GET" or "LIMITS" in c[1]]
        assert [c[0] for c in limiter_calls] == ["EVALSHA"], commands
    assert len(resets) <= 2 and min(resets) > time.time()  # one window (±1 s of rounding)
    r = client.get("/api/usage", headers=team.headers)
    assert r.status_code == 429 and r.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_reads_go_to_redis_unless_just_counted_on_this_thread(app, redis_url):
    storage = CountingRedisStorage("dispatched+" + redis_url)
    assert storage.incr("a", 60) == 1
    storage.get_connection().incrby(storage.prefixed_key("a"), 5)  # another process's hits
    assert storage.get("a") == 1  # this request's own count, for its headers
    assert 59 <= storage.get_expiry("a") - time.time() <= 60
    assert storage.get("a") == 6  # after the headers: Redis again
    assert storage.get("b") == 0
    storage.incr("a", 60)
    storage._seen.last = (*storage._seen.last[:3], time.monotonic() - 2)  # too old to stand in
    assert storage.get("a") == 7


def test_redis_down_falls_back_to_memory(app, database_url, redis_url, make_team):
    team = make_team("tiny_rate")
    dead = make_app(
        database_url, redis_url, RATELIMIT_STORAGE_URI="dispatched+redis://127.0.0.1:1/0"
    )
    try:
        client = dead.test_client()
        for _ in range(5):
            assert client.get("/api/usage", headers=team.headers).status_code == 200
        assert client.get("/api/usage", headers=team.headers).status_code == 429
    finally:
        limiter._storage_dead = False  # see test_accounts.test_limits_fall_back_to_memory…
