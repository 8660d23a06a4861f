"""Ray Serve request routing for the Reasoner: a dialogue's rounds go to the replica holding its cache.

The session id is read from the request itself (its ``ReasonRequest``), not sent as a multiplexed model
id: Ray Serve's router indexes pending requests by multiplexed model id and drops an id's entries only when
that id is routed again, so each finished session would leave its last request, arguments and patient data
included, in the front's memory. Replicas are ranked for each session by rendezvous (highest-random-weight)
hashing, so every router agrees on a session's
replica without sharing state, and a change of replicas moves only the sessions of the replicas
that came or went. When the preferred replica has no room the request goes to any other (which
rebuilds the dialogue from Redis); requests without a session may go anywhere.
"""

from __future__ import annotations

import hashlib

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from serving.messages import ReasonRequest


def _weight(session: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{session}\0{replica}".encode(), digest_size=8).digest()


def rank_replicas(session_id: str, replica_ids: list[str]) -> list[str]:
    """``replica_ids`` in the session's order of preference, first choice first (rendezvous hashing).

    Pure and deterministic: any process ranks the same replicas the same way for a session.
    """
    return sorted(replica_ids, key=lambda replica: _weight(session_id, replica), reverse=True)


class SessionAffinityRouter(RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """[[the session's replica], [the others]]; one rank of all candidates without a session or a choice."""
        request = pending_request.args[0] if pending_request and pending_request.args else None
        session = request.session_id if isinstance(request, ReasonRequest) and request.session_id else ""
        if not session or len(candidate_replicas) < 2:
            return [candidate_replicas]
        ids = [r.replica_id.unique_id for r in candidate_replicas]
        place = {replica: k for k, replica in enumerate(rank_replicas(session, ids))}
        ranked = sorted(candidate_replicas, key=lambda r: place[r.replica_id.unique_id])
        return [ranked[:1], ranked[1:]]
