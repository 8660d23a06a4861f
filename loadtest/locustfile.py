"""Locust users that hold multi-round MediRound dialogues over gRPC.

    .venv/bin/python -m locust -f loadtest/locustfile.py --host 127.0.0.1:50051 --data data/phantoms

Each task is one phantom conversation: ``CreateSession`` with its image, every round in order (the
questions refer back: "round N", "instance N", "its"), then ``DeleteSession``. Requests are reported
as "CreateSession", "round 1", "round 2", ... so locust's percentiles come per round index.
``loadtest/run.py`` starts a server, runs this headless and prints the table.
"""

from __future__ import annotations

# isort: off
import locust  # first: it monkey-patches the standard library for gevent before anything else loads
# isort: on
import random
import time
from pathlib import Path

import gevent
import grpc
import grpc.experimental.gevent
from google.protobuf.message import Message
from locust.stats import CSV_STATS_INTERVAL_SEC

from model.data.mrmedseg import load
from serving.client import MediRoundClient

grpc.experimental.gevent.init_gevent()  # else each gRPC call blocks the gevent hub: users run one at a time

SESSION_TTL_SECONDS = 300  # a dialogue cut off when the run ends leaves its session to expire soon


@locust.events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--data", default="data/phantoms", env_var="MEDIROUND_DATA",
                        help="MR-MedSeg dataset root whose conversations the users hold")
    parser.add_argument("--splits", default="test_hard,test", env_var="MEDIROUND_SPLITS",
                        help="comma-separated splits to draw conversations from (those present are used)")
    parser.add_argument("--token", default="", env_var="MEDIROUND_TOKEN", help="bearer token, if the server wants one")


class RpcFailure(Exception):
    """A failed call as locust lists it (by repr): the status code and details, not gRPC's debug string."""

    def __repr__(self) -> str:
        return str(self)


def dialogues(root: Path, splits: str) -> list[tuple[bytes, list[tuple[str, int | None]]]]:
    """(image bytes, [(question, the earlier round it refers to, 0-based)]) of every conversation in the
    splits that exist under ``root``; read once here, so that the users measure the server, not the disk."""
    files = [root / f"{s.strip()}.json" for s in splits.split(",")]
    convs = [c for f in files if f.is_file() for c in load(f)]
    if not convs:
        raise FileNotFoundError(f"no conversations in {', '.join(map(str, files))}")
    return [((root / c.image).read_bytes(), [(r.question, r.reference) for r in c.rounds]) for c in convs]


def _final_csv(**_) -> None:
    # locust rewrites --csv once a second but not at exit (locustio/locust#2299): let it write once
    # more, now that the users have stopped, so that the CSV holds the figures of the final summary
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)


@locust.events.init.add_listener
def _init(environment, **_) -> None:
    o = environment.parsed_options
    if o is None:  # an environment built in code, without the command line
        return
    environment.dialogues = dialogues(Path(o.data), o.splits)
    if o.csv_prefix:
        environment.events.quit.add_listener(_final_csv)


class DialogueUser(locust.User):
    """One client holding one dialogue after another, each round as soon as the last is answered."""

    wait_time = locust.constant(0)

    def on_start(self) -> None:
        self.client = MediRoundClient(self.host, token=self.environment.parsed_options.token or None)

    def on_stop(self) -> None:
        self.client.close()

    def call(self, name: str, method, *args, **kwargs):
        """Time one RPC and report it to locust; returns the response, or None when it failed."""
        start, response, failure = time.perf_counter(), None, None
        try:
            response = method(*args, **kwargs)
        except grpc.RpcError as e:
            failure = RpcFailure(f"{e.code().name}: {e.details()}")
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=1e3 * (time.perf_counter() - start),
            response_length=response.ByteSize() if isinstance(response, Message) else 0, exception=failure, context={})
        return response

    @locust.task
    def dialogue(self) -> None:
        image, script = random.choice(self.environment.dialogues)
        session = self.call("CreateSession", self.client.create_session, image, ttl_seconds=SESSION_TTL_SECONDS)
        if session is None:
            return
        found: list[bool] = []  # whether each round answered has a mask
        for k, (question, reference) in enumerate(script, start=1):
            if reference is not None and not found[reference]:
                break  # as a client would: the service refuses a reference to a round that found nothing
            reply = self.call(f"round {k}", self.client.ask, session.id, question)
            if reply is None:
                break  # later questions refer to this round
            found.append(reply.has_mask)
        self.call("DeleteSession", self.client.delete, session.id)
