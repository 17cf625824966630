"""The receiver's pure parts (issue 9): credentials, in-flight bounds, rate-limited logging,
settings validation, and the accepted window as the rules set it.

The window test runs the real aiohttp app with a Kafka gate that is never
started: a request refused by the window is 400 before anything is produced,
one accepted by it reaches the gate and is 503 "not connected" - no Kafka,
and no stand-in for it, is needed to tell the two apart.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from detector.errors import InvalidRequest
from detector.rules import load_rule_files
from detector.rules.placement import place_groups
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.receiver import SERVER_OPTIONS, Credentials, InFlight, KafkaGate, RateLimitedLog, create_receiver_app
from pipelines.settings import Settings
from tests.support import write_rules

HOUR = 3_600_000
NOW = 1_800_000_000_000
UP = (("__name__", "up"), ("job", "api"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("credentials", "header", "status"), [
    (Credentials(bearer="t0ken"), "", 401),
    (Credentials(bearer="t0ken"), "Bearer nope", 403),
    (Credentials(bearer="t0ken"), "Bearer t0ken", None),
    (Credentials(bearer="t0ken"), basic("prom", "t0ken"), 401),  # basic auth is not configured
    (Credentials(basic=("prom", "pw")), "", 401),
    (Credentials(basic=("prom", "pw")), basic("prom", "nope"), 403),
    (Credentials(basic=("prom", "pw")), basic("other", "pw"), 403),
    (Credentials(basic=("prom", "pw")), "Basic %%%", 401),
    (Credentials(basic=("prom", "pw")), basic("prom", "pw"), None),
    (Credentials(basic=("prom", "p:w")), basic("prom", "p:w"), None),  # a colon in the password
    (Credentials(bearer="t0ken", basic=("prom", "pw")), basic("prom", "pw"), None),
    (Credentials(bearer="t0ken", basic=("prom", "pw")), "Bearer t0ken", None),
])
def test_credentials_answer_401_when_missing_and_403_when_wrong(credentials, header, status):
    if status is None:
        credentials.check(header)
        return
    with pytest.raises(InvalidRequest) as refused:
        credentials.check(header)
    assert refused.value.status == status


def test_in_flight_bounds_refuse_without_counting_and_release_frees():
    bound = InFlight(max_requests=3, max_bytes=1000)
    assert [bound.admit(400), bound.admit(400), bound.admit(400)] == [None, None, "bytes"]
    assert (bound.requests, bound.bytes) == (2, 800)
    assert bound.admit(200) is None and bound.admit(0) == "requests"
    for size in (400, 400, 200):
        bound.release(size)
    assert (bound.requests, bound.bytes) == (0, 0)


def test_rate_limited_log_counts_what_it_held_back():
    lines: list[str] = []
    now = [0.0]
    limited = RateLimitedLog(lines.append, interval_s=10, clock=lambda: now[0])
    for t in (0, 1, 5, 9.9, 10, 25):
        now[0] = t
        limited("bad")
    assert lines == ["bad", "bad (and 3 more like it since the last line)", "bad"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"receiver_tls_cert_file": "CERT"}, "go together"),
    ({"receiver_tls_client_ca_file": "CERT"}, "needs receiver_tls_cert_file"),
    ({"receiver_basic_auth_user": "prom"}, "go together"),
    ({"receiver_tls_cert_file": "CERT", "receiver_tls_key_file": "missing.key"}, "no such file: missing.key"),
    ({"name_validation": "loose"}, "legacy"),
    ({"catch_up_window": "two hours"}, "not a duration"),
])
def test_receiver_settings_are_checked_at_start(tmp_path, settings, message):
    (tmp_path / "cert.pem").write_text("x")
    values = {k: (str(tmp_path / "cert.pem") if v == "CERT" else v) for k, v in settings.items()}
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_the_window_is_the_catch_up_window_plus_the_lookback_plus_what_the_rules_read():
    assert Settings().sample_window().max_age_ms == 2 * HOUR + 5 * 60_000
    assert Settings(catch_up_window="30m", max_sample_ahead="1m").sample_window(HOUR).max_ahead_ms == 60_000


async def _statuses(tmp_path, stamps: list[int]) -> list[int]:
    rules = write_rules(tmp_path, [{"alert": "SlowRate", "expr": "rate(jobs_total[10m] offset 1h) > 0"}], interval="1m")
    placement = place_groups(load_rule_files([rules]))
    gate = KafkaGate("127.0.0.1:1", timeout_s=1.0)  # never started: what passes the window is 503 "not connected"
    app = create_receiver_app(Settings(partitions=2), gate, CollectorRegistry(), placement=placement, clock=lambda: NOW)
    client = TestClient(TestServer(app, **SERVER_OPTIONS))
    await client.start_server()
    try:
        out = []
        for stamp in stamps:
            answer = await client.post("/api/v1/write", data=encode_write_request([(UP, [(stamp, 1.0)])]),
                                       headers=REMOTE_WRITE_HEADERS)
            out.append(answer.status)
        return out
    finally:
        await client.close()


async def test_the_receiver_window_is_the_catch_up_window_plus_the_rules_reach(tmp_path):
    # 2h catch-up + 5m lookback + the rule's 10m range 1h back + its group's 1m interval.
    oldest = NOW - (2 * HOUR + 5 * 60_000 + HOUR + 10 * 60_000 + 60_000)
    statuses = await _statuses(tmp_path, [oldest, oldest - 1, NOW + 5 * 60_000, NOW + 5 * 60_000 + 1, 0])
    assert statuses == [503, 400, 503, 400, 400]



def test_a_certificate_that_does_not_load_is_a_clear_error_at_start(tmp_path):
    from detector.errors import HeadroomError
    from pipelines.receiver import server_ssl_context

    bad = tmp_path / "server.pem"
    bad.write_text("not a certificate")
    settings = Settings(receiver_tls_cert_file=bad, receiver_tls_key_file=bad)
    with pytest.raises(HeadroomError, match=f"cannot load the receiver's TLS certificate {bad}"):
        server_ssl_context(settings)
    assert server_ssl_context(Settings()) is None


async def test_inline_decodes_that_waited_too_long_for_their_turn_are_shed():
    # 30 requests of 3000 new series at once: each decode takes a while, so the
    # later ones wait for their turn longer than the bound and are answered
    # 503 without being decoded. The gate is never started: a request that was
    # decoded is then 503 "not connected", which tells the two apart.
    bodies = [encode_write_request([((("__name__", "fresh"), ("instance", f"b{b}"), ("n", str(i))), [(NOW, 1.0)])
                                    for i in range(3000)]) for b in range(30)]
    gate = KafkaGate("127.0.0.1:1", timeout_s=1.0)
    app = create_receiver_app(Settings(partitions=2, max_event_loop_lag="50ms"), gate, CollectorRegistry(),
                              clock=lambda: NOW)
    client = TestClient(TestServer(app, **SERVER_OPTIONS))
    await client.start_server()
    try:
        answers = await asyncio.gather(*(client.post("/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS)
                                         for body in bodies))
        texts = [await answer.text() for answer in answers]
    finally:
        await client.close()
    assert {answer.status for answer in answers} == {503}
    decoded = [t for t in texts if t.startswith("not connected to Kafka")]
    waited = [t for t in texts if "behind other decodes" in t]
    assert decoded and waited and len(decoded) + len(waited) + sum("event loop" in t for t in texts) == 30, texts[:5]
