"""Ray Serve request routing for the Reasoner: a dialogue's rounds go to the replica holding its cache.

The session id travels as the request's ``multiplexed_model_id``. Replicas are ranked for each
session by rendezvous (highest-random-weight) hashing, so every router agrees on a session's
replica without sharing state, and a change of replicas moves only the sessions of the replicas
that came or went. When the preferred replica has no room the request goes to any other (which
rebuilds the dialogue from Redis); requests without a session may go anywhere.
"""

from __future__ import annotations

import hashlib

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica


def _weight(session: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{session}\0{replica}".encode(), digest_size=8).digest()


class SessionAffinityRouter(RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        session = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if not session or len(candidate_replicas) < 2:
            return [candidate_replicas]
        ranked = sorted(candidate_replicas, key=lambda r: _weight(session, r.replica_id.unique_id), reverse=True)
        return [ranked[:1], ranked[1:]]
