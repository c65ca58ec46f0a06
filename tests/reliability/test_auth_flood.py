"""A flood of wrong basic-auth passwords against the web server (in a process of its own, with
a short login cache so the test outlasts it several times): the scraper keeps access."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bcrypt

from tests.helpers import percentile
from tests.reliability.attack_common import Scraper, ServedProcess, log_problems
from tests.reliability.conftest import sized

Figure = Callable[[str, str, str], None]
USER, PASSWORD = "prometheus", "Scrape-Pass-4411"

# argv[2] threads sending a new wrong password for USER on every request, until stdin closes;
# prints the number of requests and the statuses they got.
_FLOOD = """
import base64, collections, http.client, sys, threading
host, port = sys.argv[1].split("//")[1].split(":")
stop = threading.Event()
statuses = collections.Counter()
def flood(n):
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    i = 0
    while not stop.is_set():
        i += 1
        token = base64.b64encode(f"prometheus:wrong-{n}-{i}".encode()).decode()
        try:
            c.request("GET", "/metrics", headers={"Authorization": "Basic " + token})
            r = c.getresponse(); r.read()
            statuses[r.status] += 1
        except (OSError, http.client.HTTPException):
            c.close(); c = http.client.HTTPConnection(host, int(port), timeout=30)
threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(int(sys.argv[2]))]
for t in threads: t.start()
sys.stdin.read(); stop.set()
for t in threads: t.join(60)
print(sum(statuses.values()), dict(statuses), flush=True)
"""


async def test_a_password_flood_does_not_lock_out_the_scraper(
    tmp_path: Path, figure: Figure
) -> None:
    clients, ttl = 32, sized(2.0, 10.0)
    seconds = 4 * ttl
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    settings = {"web_config": str(config), "auth": {"cache_ttl": ttl}}
    with ServedProcess(settings) as served:
        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _FLOOD,
            served.url,
            str(clients),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(1)  # the flood is on before the scraper's first login
        # From another address, as a Prometheus server is.
        scraper = Scraper(
            served.url,
            interval=0.2,
            keep_alive=True,
            headers={"Authorization": f"Basic {token}"},
            source="127.0.0.2",
        )
        scraper.start()
        await asyncio.sleep(seconds)
        scraper.stop()
        out, _ = await asyncio.wait_for(flood.communicate(b""), 120)
        lines = list(served.lines)
    requests, statuses = out.decode().split(" ", 1)
    assert scraper.failures == [], scraper.failures[:5]
    assert scraper.statuses == {200: len(scraper.latencies)}
    assert "401" in statuses
    assert log_problems(lines) == []
    first, cached = scraper.latencies[0], scraper.latencies[1:]
    figure(
        f"{clients} clients sending a new wrong password on every request for {seconds:g} s "
        f"(4x the login cache lifetime of {ttl:g} s), bcrypt cost 10; a scraper with the right "
        "one from another address every 200 ms, starting mid-flood",
        "the scraper never got 429 or 401: its first login got a check of its own (pending "
        "checks bounded per address), and its cached login was extended on each use",
        f"scraper: first login {first * 1000:.0f} ms (a bcrypt check behind the flood's), then "
        f"p99 {percentile(cached, 99) * 1000:.1f} ms, p50 {percentile(cached, 50) * 1000:.1f} ms "
        f"over {len(cached)} scrapes, 0 refused; flood: {requests} requests, statuses "
        f"{statuses.strip()}",
    )
