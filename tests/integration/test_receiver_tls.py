"""HTTPS, mutual TLS and basic auth on the receiver, with a real Prometheus sending (issue 9).

Certificates are made here with the ``openssl`` command: a CA, a server
certificate for 127.0.0.1, and a client certificate Prometheus presents.
The receiver runs as ``headroom receiver``, configured by HEADROOM_* variables.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.stack.kafka import create_topics
from pipelines.stack.process import free_port, log_tail, start_process, stop_pid
from pipelines.stack.prometheus import PrometheusServer
from simulator.runbook import RunbookSimulator
from simulator.serve import serve_metrics
from tests.integration.test_receiver import consume_batches

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """ca.crt, server.{crt,key} for 127.0.0.1, client.{crt,key}, all signed by the CA."""
    d = tmp_path / "certs"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=headroom-test-ca", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    (d / "password").write_text("s3cret\n")
    return d


def client_tls(certs: Path, *, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if with_cert:
        context.load_cert_chain(certs / "client.crt", certs / "client.key")
    return context


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_prometheus_writes_over_mutual_tls_with_basic_auth(kafka, tmp_path, app_id, certs):
    topic = f"{app_id}-samples"
    await create_topics(kafka.bootstrap, {topic: 4})
    port = free_port()
    env = dict(os.environ,
               HEADROOM_KAFKA_BOOTSTRAP=kafka.bootstrap, HEADROOM_SAMPLES_TOPIC=topic, HEADROOM_PARTITIONS="4",
               HEADROOM_METADATA_TOPIC=f"{app_id}-metadata", HEADROOM_RECEIVER_PORT=str(port),
               HEADROOM_RECEIVER_TLS_CERT_FILE=str(certs / "server.crt"),
               HEADROOM_RECEIVER_TLS_KEY_FILE=str(certs / "server.key"),
               HEADROOM_RECEIVER_TLS_CLIENT_CA_FILE=str(certs / "ca.crt"),
               HEADROOM_RECEIVER_BASIC_AUTH_USER="prom",
               HEADROOM_RECEIVER_BASIC_AUTH_PASSWORD_FILE=str(certs / "password"))
    await create_topics(kafka.bootstrap, {f"{app_id}-metadata": 1})
    log = tmp_path / "receiver.log"
    receiver = start_process([sys.executable, "-m", "pipelines.cli", "receiver"], log, cwd=REPO, env=env)
    url = f"https://127.0.0.1:{port}"
    sim = RunbookSimulator(scenario="calm", start_ms=int(time.time() * 1000))
    runner, sim_port = await serve_metrics(sim)
    prometheus = PrometheusServer(
        tmp_path / "prometheus", scrape_targets=[f"127.0.0.1:{sim_port}"], remote_write_url=f"{url}/api/v1/write",
        extra_remote_write={
            "tls_config": {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / "client.crt"),
                           "key_file": str(certs / "client.key")},
            "basic_auth": {"username": "prom", "password_file": str(certs / "password")},
        },
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(f"{url}/-/ready", ssl=client_tls(certs)) as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"receiver not ready; its log ends:\n{log_tail(log)}")
            body = encode_write_request([((("__name__", "up"), ("job", "probe")), [(int(time.time() * 1000), 1.0)])])
            headers = {**REMOTE_WRITE_HEADERS, **basic("prom", "wrong")}
            async with session.post(f"{url}/api/v1/write", data=body, headers=headers, ssl=client_tls(certs)) as wrong:
                assert wrong.status == 403
            async with session.post(f"{url}/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS,
                                    ssl=client_tls(certs)) as missing:
                assert missing.status == 401
            with pytest.raises(aiohttp.ClientError):  # no client certificate: the handshake fails
                async with session.post(f"{url}/api/v1/write", data=body, headers={**REMOTE_WRITE_HEADERS, **basic("prom", "s3cret")},
                                        ssl=client_tls(certs, with_cert=False)) as answer:
                    await answer.read()
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with session.post(f"http://127.0.0.1:{port}/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS) as answer:
                    await answer.read()
        await asyncio.to_thread(prometheus.start)
        batches = await consume_batches(kafka.bootstrap, topic, 50, timeout=90)
    finally:
        await asyncio.to_thread(prometheus.stop)
        stop_pid(receiver.pid, grace=15.0)
        await runner.cleanup()
    names = {dict(batch.series_labels(i)).get("__name__") for batch in batches for i in set(batch.series_index.tolist())}
    # Scraped by Prometheus and sent over TLS: the simulator's series and Prometheus's own `up`.
    assert "up" in names and len(names) > 5, names
    jobs = {dict(batch.series_labels(i)).get("job") for batch in batches for i in set(batch.series_index.tolist())}
    assert "probe" not in jobs  # the refused requests delivered nothing
