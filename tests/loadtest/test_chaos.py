"""The chaos harness, bounded: one replica of each deployment, a few dialogues, one kill of each deployment's
replica and one Redis restart (``loadtest/chaos.py`` as ``make chaos`` runs it, smaller); then the issue's
targets on what it measured and audited. First, fast: its audit and figures on hand-made records."""

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[2] / "loadtest" / "chaos.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("chaos", CHAOS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_audit_finds_lost_duplicated_and_changed_rounds(harness, redis_url):
    import redis

    from serving.messages import Round
    from serving.store import key, round_to_json, rounds_key

    def stored(number, request_id, answer):
        return Round(number, "Segment the liver.", answer, [], None, b"", None, None, False, False, None, request_id)

    def ack(sid, number, request_id, answer):
        return harness.Ack(sid, request_id, number, "Segment the liver.", answer, False, harness.mask_sha256(b""), 0, 1)

    client = redis.Redis.from_url(redis_url)
    good, bad = uuid.uuid4().hex, uuid.uuid4().hex
    for sid, rounds in ((good, [stored(1, "a", "x"), stored(2, "b", "y")]),
                        (bad, [stored(1, "a", "x"), stored(2, "a", "x"), stored(3, "c", "changed")])):
        client.rpush(rounds_key(sid), *map(round_to_json, rounds))
        client.hset(key("session", sid), "version", len(rounds))
        client.hset(key("session", sid, "requests"), mapping={r.request_id: r.number for r in rounds})
    runs = [harness.DialogueRun(0, 0, "", good, ["a", "b"], [ack(good, 1, "a", "x"), ack(good, 2, "b", "y")]),
            harness.DialogueRun(0, 0, "", bad, ["a", "c", "d"],
                                [ack(bad, 1, "a", "x"), ack(bad, 3, "c", "y"), ack(bad, 4, "d", "z")])]
    audit = harness.audit(runs, redis_url)
    assert (audit.sessions, audit.acknowledged) == (2, 5)
    assert (audit.lost, audit.duplicated, audit.mismatched, audit.broken_sessions) == (1, 1, 1, 1), audit.problems


def test_the_figures_of_a_fault_come_from_the_rounds_after_it(harness):
    def attempt(sid, start, end, code="OK"):
        return harness.Attempt("CreateRound", 0, sid, 1, "r", start, end, code)

    def ack(sid, start, at):
        return harness.Ack(sid, "r", 1, "q", "a", False, "", start, at)

    # Redis down 10..12 s: s1 was asking across it and answered 12.5 s; s2 had finished at 9 s; s3 gave up
    attempts = [attempt("s1", 8, 9), attempt("s1", 9.5, 10.5, "UNAVAILABLE"), attempt("s1", 11.9, 12.5),
                attempt("s2", 8, 9), attempt("s3", 9, 11, "UNAVAILABLE")]
    runs = [harness.DialogueRun(0, 0, "", "s1", acks=[ack("s1", 8, 9), ack("s1", 11.9, 12.5)]),
            harness.DialogueRun(1, 0, "", "s2", acks=[ack("s2", 8, 9)]),
            harness.DialogueRun(2, 0, "", "s3", given_up=True)]
    (redis,) = harness.fault_figures([harness.Fault("Redis", 10.0, 12.0)], attempts, runs)
    assert redis.failures == {"UNAVAILABLE": 2} and redis.back_s == 2.0
    assert redis.recover_s == pytest.approx(2.5)  # the first round started after the fault: 10 s -> 12.5 s
    assert (redis.sessions_active, redis.sessions_stuck) == (2, 1) and redis.sessions_usable_s == pytest.approx(0.5)
    assert harness.longest_stall([1.0, 2.0, 9.0], end=10.0) == 7.0


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    """One bounded run's report (chaos.json) and its printed table."""
    out = tmp_path_factory.mktemp("chaos")
    r = subprocess.run([sys.executable, str(CHAOS), "--out", str(out), "--replicas", "1", "--dialogues", "3",
                        "--duration", "40", "--sample", "3"], capture_output=True, text=True, timeout=540)
    assert (out / "chaos.json").is_file(), r.stdout + r.stderr
    (report,) = json.loads((out / "chaos.json").read_text())["runs"]
    print(r.stdout)  # the table, shown with the failure
    return report, r


@pytest.mark.slow
def test_every_fault_was_injected_and_rounds_kept_flowing(chaos):
    report, r = chaos
    assert [f["target"] for f in report["faults"]] == ["ImageEncoder", "Reasoner", "Segmenter", "Redis"]
    assert all(f["back_s"] is not None for f in report["faults"]), report["faults"]
    assert report["audit"]["acknowledged"] > 0
    assert "| replicas | rounds acknowledged | lost | duplicated |" in r.stdout


@pytest.mark.slow
def test_no_acknowledged_round_is_lost_duplicated_or_changed(chaos):
    audit = chaos[0]["audit"]
    assert (audit["lost"], audit["duplicated"], audit["mismatched"], audit["broken_sessions"]) == (0, 0, 0, 0), \
        audit["problems"]


@pytest.mark.slow
def test_the_rerun_dialogues_have_the_served_masks(chaos):
    rerun = chaos[0]["rerun"]
    assert rerun["rounds"] > 0 and rerun["mismatched"] == 0, rerun["problems"]


@pytest.mark.slow
def test_with_one_replica_rounds_fail_only_unavailable_or_aborted(chaos):
    assert set(chaos[0]["failures"]) <= {"UNAVAILABLE", "ABORTED"}, chaos[0]["failures"]


# How soon (the 10 s and 2 s) is a figure that `make chaos` prints and checks (exit 1), not a
# test: on a shared machine start-up times swing with the load. These assert that it happens at all.
@pytest.mark.slow
def test_rounds_flow_again_after_every_replica_kill(chaos):
    recover = {f["target"]: f["recover_s"] for f in chaos[0]["faults"] if f["target"] != "Redis"}
    assert all(s is not None for s in recover.values()), recover


@pytest.mark.slow
def test_every_session_under_way_is_usable_again_after_redis_returns(chaos):
    (redis,) = [f for f in chaos[0]["faults"] if f["target"] == "Redis"]
    assert redis["sessions_active"] > 0
    assert redis["sessions_stuck"] == 0 and redis["sessions_usable_s"] is not None, redis
