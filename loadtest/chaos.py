"""The chaos harness: multi-round dialogues under load while a replica of each deployment is killed in turn
and Redis is restarted; then every acknowledged round is audited against the store and a sample of the
dialogues is rerun in-process to check their masks.

    .venv/bin/python loadtest/chaos.py --out out/chaos --replicas 2 1 --dialogues 4 --duration 90

Each ``--replicas`` count is one run of its own: a fresh ``redis-server`` (AOF, fsync on every write) and
a fresh service with that many replicas of every deployment. Client threads hold dialogues; every round has
its own request_id and a failed round is retried with the same request_id (the idempotency contract), with
backoff, for up to ``--retry-budget`` seconds. A round is acknowledged when a CreateRound returned OK. The
faults, in turn: SIGKILL one replica process of ImageEncoder, Reasoner, Segmenter (Serve replaces it), then
SIGKILL Redis and start it again on the same port and data. Prints a Markdown table, writes
``<out>/chaos.json`` (every figure) and ``<out>/attempts-<n>.csv`` (every call); exits 1 when a target
is missed. Here: the harness, its records, its figures and its targets; the service is only used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.runtime.embedded_redis import EmbeddedRedis

ALLOWED = ("UNAVAILABLE", "ABORTED")
"""The only status codes a round may fail with under a fault (the issue's target with one replica)."""
RETRYABLE = {"UNAVAILABLE", "ABORTED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN", "CANCELLED"}
"""Retried with the same request_id. INTERNAL too: safe to retry, and it still counts as a failure."""
RECOVER_S = 10.0  # rounds flow again within this long after a replica is killed
REDIS_USABLE_S = 2.0  # every session has its next round within this long after Redis returns


# -- records -------------------------------------------------------------------------------------
@dataclass
class Script:
    """One dialogue to hold: an image and its questions, in order, with the earlier round (0-based) each
    refers to, if any."""

    image: Path
    questions: list[str]
    references: list[int | None]


@dataclass
class Attempt:
    """One call as the client saw it; times are seconds since the run started."""

    call: str  # CreateSession or CreateRound
    worker: int
    session_id: str  # "" for CreateSession
    round: int  # the round's place in its dialogue (1-based); 0 for CreateSession
    request_id: str
    start: float
    end: float
    code: str  # OK or the status code's name
    details: str = ""  # the status message of a failed call (what failed: the store, a replica, ...)


@dataclass
class Ack:
    """A round a CreateRound returned OK for."""

    session_id: str
    request_id: str
    number: int
    question: str
    answer: str
    has_mask: bool
    mask_sha256: str
    start: float  # when the attempt that succeeded started
    at: float  # when its OK came back


@dataclass
class DialogueRun:
    """One session as a worker held it."""

    worker: int
    script: int
    image: str
    session_id: str
    request_ids: list[str] = field(default_factory=list)  # one per round asked, acknowledged or not
    acks: list[Ack] = field(default_factory=list)
    given_up: bool = False  # a round failed past the retry budget; the dialogue stopped there


@dataclass
class Fault:
    target: str  # a deployment name, or Redis
    at: float  # when it was killed
    back: float | None = None  # when a replacement replica ran / Redis answered again (None: never)
    respawned: float | None = None  # when the replacement's process was up (still loading the model)
    pid: int = 0


@dataclass
class FaultFigures:
    target: str
    at: float
    back_s: float | None  # fault -> replica replaced / Redis answering
    respawn_s: float | None  # fault -> the replacement replica's process up (Serve saw the death)
    recover_s: float | None  # fault -> the first acknowledged round whose attempt started after it
    failures: dict[str, int]  # failed CreateRound attempts that ended between this fault and the next, by code
    sessions_active: int = 0  # Redis: dialogues under way across the outage
    sessions_usable_s: float | None = None  # Redis: the slowest of them, Redis back -> its next acknowledged round
    sessions_stuck: int = 0  # Redis: of them, those without an acknowledged round after Redis returned


@dataclass
class AuditFigures:
    sessions: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged, absent from the store
    duplicated: int = 0  # acknowledged, stored more than once
    mismatched: int = 0  # stored once, but not as acknowledged (number, question, answer or mask)
    broken_sessions: int = 0  # stored round numbers, version or request map not 1..n
    unacknowledged: int = 0  # stored rounds whose request never got an OK (its retries ran out after the append)
    problems: list[str] = field(default_factory=list)


@dataclass
class RerunFigures:
    dialogues: int = 0
    rounds: int = 0
    mismatched: int = 0  # rounds whose in-process answer or mask differs from the stored one
    problems: list[str] = field(default_factory=list)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ModeReport:
    replicas: int
    dialogues: int
    seconds: float
    attempts: int
    rounds_given_up: int
    failures: dict[str, int]  # failed CreateRound attempts by code
    session_failures: dict[str, int]  # failed CreateSession attempts by code
    round_p50_ms: float
    round_p99_ms: float
    longest_stall_s: float
    faults: list[FaultFigures]
    audit: AuditFigures
    rerun: RerunFigures
    checks: list[Check] = field(default_factory=list)


# -- Redis ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def durable_redis(directory: Path) -> EmbeddedRedis:
    """A real redis-server on 127.0.0.1 whose append-only file (fsync always, no RDB) is under ``directory``;
    ``kill`` crashes it, ``restart`` brings it back on the same port and data."""
    return EmbeddedRedis(directory, port=free_port())


# -- load ----------------------------------------------------------------------------------------
def script_of(root: Path, conversation) -> Script:
    return Script(root / conversation.image, [r.question for r in conversation.rounds],
                  [r.reference for r in conversation.rounds])


def scripts(data: str | None) -> list[Script]:
    """The dialogues to hold: the shipped real CT dialogues, or the test_hard/test splits under ``data``."""
    if data is None:
        return [script_of(REAL_SLICES, c) for c in load(REAL_DIALOGUES)]
    root = Path(data)
    found = [script_of(root, c)
             for split in ("test_hard", "test") if (root / f"{split}.json").is_file()
             for c in load(root / f"{split}.json")]
    if not found:
        raise SystemExit(f"no test_hard.json or test.json under {root}")
    return found


def mask_sha256(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


class Load:
    """``workers`` client threads, each holding one dialogue after another until ``stop``; every call is
    recorded (lists only appended to, which the GIL keeps whole)."""

    def __init__(self, address: str, dialogues: list[Script], workers: int, *, attempt_timeout_s: float,
                 retry_budget_s: float, seed: int):
        self.address, self.dialogues, self.workers = address, dialogues, workers
        self.attempt_timeout_s, self.retry_budget_s, self.seed = attempt_timeout_s, retry_budget_s, seed
        self.attempts: list[Attempt] = []
        self.runs: list[DialogueRun] = []
        self.last_ack_start = -1.0  # when the latest-starting acknowledged attempt started
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._worker, args=(i,), name=f"chaos-{i}", daemon=True)
                        for i in range(workers)]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        """Stop asking new rounds; each worker ends its current round (retries included)."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.retry_budget_s + 2 * self.attempt_timeout_s)

    def _retry(self, call: str, worker: int, session_id: str, number: int, request_id: str, send, rng):
        """``send()`` until OK, a code not worth retrying, or the retry budget is spent: (reply or None,
        when the last attempt started). Every attempt is recorded."""
        from serving.retries import Backoff, retry

        start = self.now()

        def attempt():
            nonlocal start
            start = self.now()

            def record(code: str, details: str = "") -> None:
                self.attempts.append(Attempt(call, worker, session_id, number, request_id, start, self.now(), code,
                                             details))

            try:
                reply = send()
            except grpc.RpcError as e:
                record(e.code().name, e.details() or "")
                raise
            record("OK")
            return reply

        def retryable(error: Exception) -> bool:
            stopping = call == "CreateSession" and self.stop.is_set()
            return isinstance(error, grpc.RpcError) and error.code().name in RETRYABLE and not stopping

        # short pauses (20 ms doubling to 250 ms, jittered): stalls are what we measure
        backoff = Backoff(first_s=0.02, longest_s=0.25, budget_s=self.retry_budget_s, jitter=0.5)
        try:
            return retry(attempt, retryable, backoff, rng=rng), start
        except grpc.RpcError:
            return None, start

    def _worker(self, index: int) -> None:
        from serving.client import MediRoundClient
        from serving.retries import Backoff

        rng = random.Random(self.seed * 1000 + index)
        # every attempt is recorded here, so the client sends each call once
        with MediRoundClient(self.address, timeout=self.attempt_timeout_s, create_backoff=Backoff(retries=0),
                             round_backoff=Backoff(retries=0)) as client:
            while not self.stop.is_set():
                n = rng.randrange(len(self.dialogues))
                script = self.dialogues[n]
                image = script.image.read_bytes()
                create_id = uuid.uuid4().hex  # its retries make one session
                session, _ = self._retry("CreateSession", index, "", 0, create_id,
                                         partial(client.create_session, image, request_id=create_id), rng)
                if session is None:
                    continue
                run = DialogueRun(index, n, str(script.image), session.id)
                self.runs.append(run)
                asks = zip(script.questions, script.references, strict=True)
                for number, (question, reference) in enumerate(asks, 1):
                    if self.stop.is_set():
                        break
                    if reference is not None and not run.acks[reference].has_mask:
                        break  # as a client would: the service refuses a reference to a round that found nothing
                    request_id = uuid.uuid4().hex
                    run.request_ids.append(request_id)
                    reply, start = self._retry("CreateRound", index, session.id, number, request_id,
                                               partial(client.ask, session.id, question, request_id=request_id), rng)
                    if reply is None:
                        run.given_up = True
                        break
                    at = self.now()
                    run.acks.append(Ack(session.id, request_id, reply.number, reply.question, reply.answer,
                                        reply.has_mask, mask_sha256(reply.mask_png), start, at))
                    self.last_ack_start = max(self.last_ack_start, start)


# -- faults --------------------------------------------------------------------------------------
class Replicas:
    """The Serve replicas of each deployment. Their processes come from Ray's actor table in the GCS: the
    state API (``ray.util.state``) needs the dashboard, which the service does not start."""

    def __init__(self, apps: dict[str, str], count: int):
        self.apps, self.count = apps, count  # deployment -> application

    def alive(self, deployment: str) -> dict[str, int]:
        """actor id -> pid of the deployment's live replica actors."""
        from ray._private import state

        name = f"ServeReplica:{self.apps[deployment]}:{deployment}"
        return {aid: a["Pid"] for aid, a in state.actors().items()
                if a["ActorClassName"] == name and a["State"] == "ALIVE"}

    def running(self, deployment: str) -> int:
        from ray import serve

        app = serve.status().applications.get(self.apps[deployment])
        return 0 if app is None else app.deployments[deployment].replica_states.get("RUNNING", 0)

    def all_running(self) -> bool:
        return all(self.running(d) >= self.count for d in self.apps)


def kill_replica(replicas: Replicas, deployment: str, now, rng: random.Random, timeout: float) -> Fault:
    """SIGKILL one replica process of ``deployment`` (a crash, not ``ray.kill``); wait until Serve runs a
    replacement and the deployment has its full count again."""
    before = replicas.alive(deployment)
    actor, pid = rng.choice(sorted(before.items()))
    fault = Fault(deployment, now(), pid=pid)
    os.kill(pid, signal.SIGKILL)
    while now() < fault.at + timeout:
        alive = replicas.alive(deployment)
        if fault.respawned is None and alive.keys() - before.keys():
            fault.respawned = now()
        if actor not in alive and len(alive) >= replicas.count and replicas.running(deployment) >= replicas.count:
            fault.back = now()
            break
        time.sleep(0.1)
    return fault


def restart_redis(server: EmbeddedRedis, now, down_s: float) -> Fault:
    fault = Fault("Redis", now(), pid=server.pid)
    server.kill()
    time.sleep(down_s)
    server.restart()
    fault.back = now()
    return fault


# -- figures -------------------------------------------------------------------------------------
def longest_stall(ack_times: list[float], end: float) -> float:
    """The longest stretch from the first acknowledged round to ``end`` with none acknowledged."""
    times = sorted(ack_times) + [end]
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def fault_figures(faults: list[Fault], attempts: list[Attempt], runs: list[DialogueRun]) -> list[FaultFigures]:
    acks = [a for run in runs for a in run.acks]
    figures = []
    for i, fault in enumerate(faults):
        until = faults[i + 1].at if i + 1 < len(faults) else float("inf")
        failed = Counter(a.code for a in attempts
                         if a.call == "CreateRound" and a.code != "OK" and fault.at <= a.end < until)
        after = [a.at for a in acks if a.start >= fault.at]
        f = FaultFigures(fault.target, fault.at, _since(fault.at, fault.back), _since(fault.at, fault.respawned),
                         min(after) - fault.at if after else None, dict(failed))
        if fault.target == "Redis" and fault.back is not None:
            _redis_sessions(f, fault, attempts, runs)
        figures.append(f)
    return figures


def _since(start: float, t: float | None) -> float | None:
    return None if t is None else t - start


def _redis_sessions(f: FaultFigures, fault: Fault, attempts: list[Attempt], runs: list[DialogueRun]) -> None:
    """The dialogues under way across the outage, and how long after Redis returned each had its next round."""
    by_session: dict[str, list[Attempt]] = {}
    for a in attempts:
        if a.call == "CreateRound":
            by_session.setdefault(a.session_id, []).append(a)
    usable = []
    for run in runs:
        tried = by_session.get(run.session_id, [])
        if not tried or tried[0].start >= fault.back or tried[-1].end < fault.at:
            continue  # began after Redis returned, or ended before it went
        if tried[-1].end <= fault.back and not run.given_up:
            continue  # its last round was answered before Redis returned: nothing left to ask
        f.sessions_active += 1
        next_ack = [a.at for a in run.acks if a.at > fault.back]
        if next_ack:
            usable.append(next_ack[0] - fault.back)
        else:
            f.sessions_stuck += 1
    f.sessions_usable_s = max(usable) if usable else None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


# -- audit ---------------------------------------------------------------------------------------
def stored_rounds(client, session_id: str):
    from serving.store import round_from_json, rounds_key

    return [round_from_json(r) for r in client.lrange(rounds_key(session_id), 0, -1)]


def audit(runs: list[DialogueRun], url: str) -> AuditFigures:
    """Every acknowledged round against the store: stored exactly once, as acknowledged; and every
    session's rounds numbered 1..n, each of its own request, its version n, its request map theirs."""
    import redis

    from serving.store import key

    client, figures = redis.Redis.from_url(url), AuditFigures()
    for run in runs:
        sid = run.session_id
        figures.sessions += 1
        stored = stored_rounds(client, sid)
        requests = {k.decode(): int(v) for k, v in client.hgetall(key("session", sid, "requests")).items()}
        version = client.hget(key("session", sid), "version")
        numbers, count = [r.number for r in stored], Counter(r.request_id for r in stored)
        if (numbers != list(range(1, len(stored) + 1)) or version is None or int(version) != len(stored)
                or len(count) != len(stored) or requests != {r.request_id: r.number for r in stored}):
            figures.broken_sessions += 1
            figures.problems.append(f"session {sid}: numbers {numbers}, version {version}, requests {requests}")
        for ack in run.acks:
            figures.acknowledged += 1
            if count[ack.request_id] == 0:
                figures.lost += 1
                figures.problems.append(f"lost: session {sid} round {ack.number} ({ack.request_id})")
            elif count[ack.request_id] > 1:
                figures.duplicated += 1
                figures.problems.append(f"duplicated x{count[ack.request_id]}: session {sid} ({ack.request_id})")
            else:
                r = next(r for r in stored if r.request_id == ack.request_id)
                if (r.number, r.question, r.answer, r.has_mask, mask_sha256(r.mask_png)) != (
                        ack.number, ack.question, ack.answer, ack.has_mask, ack.mask_sha256):
                    figures.mismatched += 1
                    figures.problems.append(f"mismatched: session {sid} round {ack.number} stored as round "
                                            f"{r.number} {r.answer!r}, acknowledged {ack.answer!r}")
        acked = {a.request_id for a in run.acks}
        for r in stored:
            if r.request_id in acked:
                continue
            if r.request_id in run.request_ids:
                figures.unacknowledged += 1
            else:
                figures.problems.append(f"session {sid} round {r.number} has a request id never sent: {r.request_id}")
                figures.broken_sessions += 1
    client.close()
    return figures


def rerun(runs: list[DialogueRun], faults: list[Fault], url: str, checkpoint: str, sample: int,
          seed: int) -> RerunFigures:
    """Rerun ``sample`` stored dialogues with the in-process predictor; their answers and masks must be the
    stored ones. Dialogues with rounds on both sides of a fault first: their later rounds came from a
    replica that rebuilt the dialogue from the store, or from a replacement replica."""
    import redis
    import torch

    from model.predictor import MultiRoundPredictor
    from serving.replicas.settings import SegmenterSettings

    client = redis.Redis.from_url(url)
    stored = {run.session_id: stored_rounds(client, run.session_id) for run in runs}
    client.close()
    candidates = [run for run in runs if stored[run.session_id]]
    rng = random.Random(seed)
    rng.shuffle(candidates)

    def spans_fault(run: DialogueRun) -> bool:
        return any(run.acks and run.acks[0].at < f.at < run.acks[-1].at for f in faults)

    candidates.sort(key=lambda run: not spans_fault(run))  # stable: shuffled within each group
    threads = torch.get_num_threads()
    torch.set_num_threads(SegmenterSettings().torch_threads)  # as in the replicas: the same floating-point sums
    figures = RerunFigures()
    try:
        predictor = MultiRoundPredictor.from_checkpoint(checkpoint)
        for run in candidates[:sample]:
            figures.dialogues += 1
            predictor.set_image(run.image)
            for r in stored[run.session_id]:
                local = predictor.ask(r.question)
                figures.rounds += 1
                mask = np.asarray(Image.open(io.BytesIO(r.mask_png))) > 0 if r.has_mask else None
                same = r.answer == local.answer and r.has_mask == local.has_mask
                if same and mask is not None:
                    same = bool(np.array_equal(mask, local.mask))
                if not same:
                    figures.mismatched += 1
                    figures.problems.append(f"session {run.session_id} round {r.number}: served {r.answer!r}, "
                                            f"in-process {local.answer!r}")
    finally:
        torch.set_num_threads(threads)
    return figures


# -- targets -------------------------------------------------------------------------------------
def checks(report: ModeReport, planned: list[str]) -> list[Check]:
    a, r = report.audit, report.rerun
    out = [
        Check("every planned fault was injected and recovered from",
              [f.target for f in report.faults] == planned and all(f.back_s is not None for f in report.faults),
              ", ".join(f"{f.target} back after {_s(f.back_s)}" for f in report.faults)),
        Check("rounds were acknowledged", a.acknowledged > 0, f"{a.acknowledged} acknowledged"),
        Check("no acknowledged round lost", a.lost == 0, f"{a.lost} lost"),
        Check("no acknowledged round duplicated", a.duplicated == 0, f"{a.duplicated} duplicated"),
        Check("every acknowledged round stored as acknowledged", a.mismatched == 0 and a.broken_sessions == 0,
              f"{a.mismatched} mismatched, {a.broken_sessions} sessions with bad numbering"),
        Check("rerun masks equal the served ones", r.rounds > 0 and r.mismatched == 0,
              f"{r.rounds - r.mismatched}/{r.rounds} rounds of {r.dialogues} dialogues equal"),
        Check(f"rounds fail only with {'/'.join(ALLOWED)}", set(report.failures) <= set(ALLOWED),
              _codes(report.failures)),
    ]
    replica_faults = [f for f in report.faults if f.target != "Redis"]
    if report.replicas >= 2:
        failed = sum(sum(f.failures.values()) for f in replica_faults)
        out.append(Check("no round fails when a replica of a deployment with 2 is killed", failed == 0,
                         f"{failed} failed attempts in the replica faults' windows"))
    slow = [f for f in replica_faults if f.recover_s is None or f.recover_s > RECOVER_S]
    out.append(Check(f"rounds flow again within {RECOVER_S:g} s of a replica kill", not slow,
                     ", ".join(f"{f.target} {_s(f.recover_s)}" for f in replica_faults)))
    for f in report.faults:
        if f.target == "Redis":
            ok = f.sessions_stuck == 0 and (f.sessions_usable_s or 0.0) <= REDIS_USABLE_S
            out.append(Check(f"every session usable within {REDIS_USABLE_S:g} s of Redis returning", ok,
                             f"{f.sessions_active} sessions under way, slowest {_s(f.sessions_usable_s)}, "
                             f"{f.sessions_stuck} without a round after it returned"))
    return out


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Options:
    replicas: int = 1
    dialogues: int = 4  # concurrent client threads
    duration_s: float = 60.0  # the load's length; the faults are spread evenly across it
    cycles: int = 1  # times through the faults (every deployment, then Redis)
    redis_down_s: float = 1.5
    attempt_timeout_s: float = 20.0
    retry_budget_s: float = 30.0
    settle_timeout_s: float = 60.0  # the longest a fault waits for the service to be whole and answering
    sample: int = 4  # dialogues rerun in-process
    checkpoint: str = str(SHIPPED_TINY)
    data: str | None = None
    seed: int = 0


def run_mode(o: Options, out: Path) -> ModeReport:
    """One whole chaos run: Redis, the service with ``o.replicas`` of each deployment, the load, the faults,
    then the audit and the rerun against the store."""
    from serving.front.server import ServerOptions
    from serving.pipeline import load_serve_config
    from serving.runtime.service import BackgroundService, ServiceOptions

    apps = {d["name"]: app["name"] for app in load_serve_config()["applications"] for d in app["deployments"]}
    planned = o.cycles * [*apps, "Redis"]
    server = durable_redis(out / f"redis-{o.replicas}")
    rng = random.Random(o.seed)
    try:
        options = ServiceOptions(checkpoint=o.checkpoint, redis_url=server.url,
                                 replicas={d: o.replicas for d in apps}, server=ServerOptions(address="127.0.0.1:0"))
        started = time.monotonic()
        with BackgroundService(options) as service:
            print(f"[{o.replicas} replicas] service up in {time.monotonic() - started:.0f} s; {o.dialogues} "
                  f"dialogues for {o.duration_s:.0f} s, faults: {', '.join(planned)}", flush=True)
            replicas = Replicas(apps, o.replicas)
            load = Load(service.address, scripts(o.data), o.dialogues, attempt_timeout_s=o.attempt_timeout_s,
                        retry_budget_s=o.retry_budget_s, seed=o.seed)
            load.start()
            spacing, faults = o.duration_s / (len(planned) + 1), []
            for k, target in enumerate(planned, 1):
                time.sleep(max(0.0, k * spacing - load.now()))
                _settle(load, replicas, faults, o.settle_timeout_s)
                if target == "Redis":
                    fault = restart_redis(server, load.now, o.redis_down_s)
                else:
                    fault = kill_replica(replicas, target, load.now, rng, o.settle_timeout_s)
                faults.append(fault)
                print(f"  {fault.at:6.1f} s  killed {target} (pid {fault.pid}); back after "
                      f"{_s(None if fault.back is None else fault.back - fault.at)}", flush=True)
            time.sleep(max(0.0, o.duration_s - load.now(), faults[-1].at + spacing - load.now()))
            load.finish()
            end = load.now()
        report = _report(o, load, faults, end, audit(load.runs, server.url),
                         rerun(load.runs, faults, server.url, o.checkpoint, o.sample, o.seed))
    finally:
        server.close()
    report.checks = checks(report, planned)
    _write_attempts(load.attempts, out / f"attempts-{o.replicas}.csv")
    return report


def _settle(load: Load, replicas: Replicas, faults: list[Fault], timeout: float) -> None:
    """Wait (bounded) until every deployment runs its replicas and a round started after the last fault's
    recovery was acknowledged (not merely one in flight past the fault), so each fault's figures are its own."""
    since = 0.0 if not faults else faults[-1].back or faults[-1].at
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (load.last_ack_start > since and replicas.all_running()):
        time.sleep(0.2)


def _report(o: Options, load: Load, faults: list[Fault], end: float, audited: AuditFigures,
            reran: RerunFigures) -> ModeReport:
    rounds = [a for a in load.attempts if a.call == "CreateRound"]
    ok_ms = [1e3 * (a.end - a.start) for a in rounds if a.code == "OK"]
    acks = [a.at for run in load.runs for a in run.acks]
    return ModeReport(
        replicas=o.replicas, dialogues=o.dialogues, seconds=end, attempts=len(load.attempts),
        rounds_given_up=sum(run.given_up for run in load.runs),
        failures=dict(Counter(a.code for a in rounds if a.code != "OK")),
        session_failures=dict(Counter(a.code for a in load.attempts if a.call == "CreateSession" and a.code != "OK")),
        round_p50_ms=percentile(ok_ms, 50), round_p99_ms=percentile(ok_ms, 99),
        longest_stall_s=longest_stall(acks, end), faults=fault_figures(faults, load.attempts, load.runs),
        audit=audited, rerun=reran)


def _write_attempts(attempts: list[Attempt], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Attempt.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(a) for a in attempts)


# -- the table -----------------------------------------------------------------------------------
def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def _codes(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"


def table(reports: list[ModeReport]) -> str:
    """The Markdown summary (one row per replica count), then each run's faults and its checks."""
    lines = ["| replicas | rounds acknowledged | lost | duplicated | failed attempts by code | rounds given up "
             "| longest stall | time to recover (first round after the fault) | sessions usable after Redis "
             "| rerun masks equal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        recover = ", ".join(f"{f.target} {_s(f.recover_s)}" for f in r.faults)
        redis = [_s(f.sessions_usable_s) + ("" if not f.sessions_stuck else f" ({f.sessions_stuck} stuck)")
                 for f in r.faults if f.target == "Redis"]
        lines.append(f"| {r.replicas} | {r.audit.acknowledged} | {r.audit.lost} | {r.audit.duplicated} "
                     f"| {_codes(r.failures)} | {r.rounds_given_up} | {r.longest_stall_s:.1f} s | {recover} "
                     f"| {', '.join(redis)} | {r.rerun.rounds - r.rerun.mismatched}/{r.rerun.rounds} |")
    for r in reports:
        lines += ["", f"{r.replicas} replicas of each deployment, {r.dialogues} dialogues, {r.seconds:.0f} s, "
                      f"{r.attempts} calls, round p50 {r.round_p50_ms:.0f} ms, p99 {r.round_p99_ms:.0f} ms; "
                      f"failed CreateSession: {_codes(r.session_failures)}; stored but unacknowledged: "
                      f"{r.audit.unacknowledged}",
                  "", "| fault | at | replacement started after | back after | first round after "
                      "| failed attempts until the next fault |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {f.target} | {f.at:.1f} s | {'-' if f.target == 'Redis' else _s(f.respawn_s)} | {_s(f.back_s)} "
                  f"| {_s(f.recover_s)} | {_codes(f.failures)} |" for f in r.faults]
        lines += [""] + [f"- {'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in r.checks]
        lines += [f"  - {p}" for p in (r.audit.problems + r.rerun.problems)[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/chaos", help="folder for chaos.json, the attempts CSV and Redis' files")
    parser.add_argument("--replicas", type=int, nargs="+", default=[2, 1],
                        help="replicas of every deployment; one whole run per count given")
    parser.add_argument("--dialogues", type=int, default=d.dialogues, help="concurrent dialogues (client threads)")
    parser.add_argument("--duration", type=float, default=d.duration_s, help="seconds of load per run")
    parser.add_argument("--cycles", type=int, default=d.cycles, help="times through the faults")
    parser.add_argument("--redis-down", type=float, default=d.redis_down_s, help="seconds Redis stays down")
    parser.add_argument("--attempt-timeout", type=float, default=d.attempt_timeout_s, help="deadline of one call")
    parser.add_argument("--retry-budget", type=float, default=d.retry_budget_s,
                        help="seconds a round is retried (same request_id) before the dialogue gives up")
    parser.add_argument("--sample", type=int, default=d.sample, help="dialogues rerun in-process")
    parser.add_argument("--checkpoint", default=d.checkpoint)
    parser.add_argument("--data", help="dataset root whose test_hard/test dialogues to hold (default: the real CT)")
    parser.add_argument("--seed", type=int, default=d.seed)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for n in args.replicas:
        shutil.rmtree(out / f"redis-{n}", ignore_errors=True)  # a fresh store: the audit reads every session
        o = Options(n, args.dialogues, args.duration, args.cycles, args.redis_down, args.attempt_timeout,
                    args.retry_budget, sample=args.sample, checkpoint=args.checkpoint, data=args.data, seed=args.seed)
        reports.append(run_mode(o, out))
        (out / "chaos.json").write_text(json.dumps({"runs": [asdict(r) for r in reports]}, indent=1))
    print(table(reports))
    return 0 if all(c.ok for r in reports for c in r.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
