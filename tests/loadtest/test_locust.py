"""The load test end to end: locust users (``loadtest/locustfile.py``) hold phantom dialogues with a
running service over loopback gRPC through ``loadtest/run.py --host``; the figures come per round."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from serving.front.server import ServerOptions
from serving.runtime.service import BackgroundService, ServiceOptions

RUN = Path(__file__).resolve().parents[2] / "loadtest" / "run.py"
TOKEN = "l0ad"


@pytest.fixture(scope="module")
def address():
    """A running service (shipped tiny model, real Ray Serve and Redis) that wants a bearer token."""
    with BackgroundService(ServiceOptions(server=ServerOptions(address="127.0.0.1:0", token=TOKEN))) as service:
        yield service.address


def run(address, data, out, *, run_time, token=TOKEN):
    return subprocess.run([sys.executable, str(RUN), "--host", address, "--data", str(data), "--token", token,
                           "--users", "4", "--spawn-rate", "4", "--run-time", run_time, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)


def stats(out: Path) -> dict[str, dict]:
    with open(out / "locust_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_users_hold_multi_round_dialogues_without_a_failure(address, phantom_root, tmp_path):
    r = run(address, phantom_root, tmp_path, run_time="20s")
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "locust.log").read_text()
    rows = stats(tmp_path)
    assert {"CreateSession", "round 1", "round 2", "round 3", "round 4", "DeleteSession"} <= rows.keys()
    assert rows["Aggregated"]["Failure Count"] == "0"
    rounds = sum(int(row["Request Count"]) for name, row in rows.items() if name.startswith("round "))
    assert rounds > 0 and int(rows["round 2"]["Request Count"]) > 0
    assert "round 2" in r.stdout and f"rounds: {rounds} in" in r.stdout  # the printed table is the CSV's


def test_failed_calls_are_reported_with_their_status_code(address, phantom_root, tmp_path):
    r = run(address, phantom_root, tmp_path, run_time="2s", token="wrong")
    assert r.returncode == 1
    assert "failed: CreateSession: UNAUTHENTICATED: " in r.stdout
    assert int(stats(tmp_path)["CreateSession"]["Failure Count"]) > 0
