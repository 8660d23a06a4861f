"""Session affinity for the Reasoner: rendezvous ranking of replicas, and the router that uses it.

``rank_replicas`` is pure, so its properties are checked directly over many sessions. The router is
run on Ray's own request types; only the replica's actor lookup is stubbed (no cluster is started).
"""

import asyncio
from collections import Counter

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata, RunningReplicaInfo
from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica

from serving.messages import Encoding, ReasonRequest
from serving.replicas.routing import SessionAffinityRouter, rank_replicas

REPLICAS = [f"replica-{k}" for k in range(4)]
SESSIONS = [f"session-{k}" for k in range(4000)]


def first_choices(replicas: list[str]) -> dict[str, str]:
    return {s: rank_replicas(s, replicas)[0] for s in SESSIONS}


def test_ranking_is_deterministic_and_a_permutation_of_the_replicas():
    for s in SESSIONS[:50]:
        ranked = rank_replicas(s, REPLICAS)
        assert sorted(ranked) == sorted(REPLICAS)
        assert rank_replicas(s, list(reversed(REPLICAS))) == ranked  # the order the router lists them in is moot
    assert first_choices(REPLICAS) == first_choices(list(REPLICAS))
    assert rank_replicas("s", []) == [] and rank_replicas("s", ["only"]) == ["only"]


def test_sessions_spread_roughly_evenly_over_the_replicas():
    counts = Counter(first_choices(REPLICAS).values())
    assert set(counts) == set(REPLICAS)
    expected = len(SESSIONS) / len(REPLICAS)
    assert all(abs(n - expected) < 0.1 * expected for n in counts.values()), counts  # 1000 each, binomial sigma 27


def test_adding_a_replica_moves_only_the_sessions_that_now_prefer_it():
    before, after = first_choices(REPLICAS), first_choices(REPLICAS + ["replica-new"])
    moved = {s for s in SESSIONS if before[s] != after[s]}
    assert moved and all(after[s] == "replica-new" for s in moved)
    assert abs(len(moved) - len(SESSIONS) / 5) < 0.1 * len(SESSIONS) / 5  # a fair share, not a reshuffle


def test_removing_a_replica_moves_only_that_replicas_sessions():
    before, after = first_choices(REPLICAS), first_choices([r for r in REPLICAS if r != "replica-2"])
    moved = {s for s in SESSIONS if before[s] != after[s]}
    assert moved == {s for s in SESSIONS if before[s] == "replica-2"}
    assert all(after[s] == rank_replicas(s, REPLICAS)[1] for s in moved)  # each goes to its second choice


class _ReplicaInfo(RunningReplicaInfo):
    """A running replica's info whose actor is never looked up: the router only reads its id."""

    def get_actor_handle(self):
        return None


def replica(unique_id: str) -> RunningReplica:
    return RunningReplica(_ReplicaInfo(replica_id=ReplicaID(unique_id, DeploymentID("reasoner")), node_id=None,
                                       node_ip=None, availability_zone=None,
                                       actor_name=f"SERVE_REPLICA::reasoner#{unique_id}", max_ongoing_requests=8))


def choose(candidates: list[RunningReplica], session: str | None) -> list[list[str]]:
    """The router's ranks for one request, as replica ids; ``session=None`` routes with no request at all."""

    async def main():
        router = SessionAffinityRouter(deployment_id=DeploymentID("reasoner"),
                                       handle_source=DeploymentHandleSource.UNKNOWN)
        request = None if session is None else PendingRequest(
            args=[ReasonRequest(session_id=session or None, encoding=Encoding(ref=None, cache_hit=False),
                                question="Segment the liver.", reference_round=None, history=[])],
            kwargs={}, metadata=RequestMetadata(request_id="r", internal_request_id="r"))
        ranks = await router.choose_replicas(candidates, request)
        return [[r.replica_id.unique_id for r in rank] for rank in ranks]

    return asyncio.run(main())


@pytest.mark.parametrize("session", ["session-7", "session-8", "session-9"])
def test_the_router_puts_the_sessions_replica_first_and_the_others_after(session):
    candidates = [replica(r) for r in REPLICAS]
    first, *rest = rank_replicas(session, REPLICAS)
    ranks = choose(candidates, session)
    assert ranks[0] == [first] and sorted(ranks[1]) == sorted(rest) and len(ranks) == 2


def test_the_router_offers_every_replica_in_one_rank_without_a_session_or_a_choice():
    candidates = [replica(r) for r in REPLICAS]
    assert choose(candidates, "") == [REPLICAS]  # a request without a session may go anywhere
    assert choose(candidates, None) == [REPLICAS]
    assert choose([replica("replica-0")], "session-7") == [["replica-0"]]
    assert choose([], "session-7") == [[]]
