"""The Redis dialogue store against a real Redis server."""

import asyncio
import hashlib
import json

import numpy as np
import pytest

from serving.errors import RequestIdReused
from serving.messages import DicomSource, Round, encode_mask
from serving.store import (
    Conflict,
    RedisSessionStore,
    RoundNotFound,
    SessionBusy,
    SessionNotFound,
    StoreReader,
    StoreUnavailable,
    TooManySessions,
    content_key,
    round_from_json,
    round_to_json,
)

IMAGE = b"\x89PNG fake image bytes are never decoded by the store"
SHA = hashlib.sha256(IMAGE).hexdigest()


def run(coro):
    return asyncio.run(coro)


def a_round(question="Segment the liver.", request_id="", reference_round=None):
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    return Round(number=0, question=question, answer="It is [SEG].", answer_ids=[5, 9, 2],
                 reference_round=reference_round, mask_png=encode_mask(mask), box=(2, 1, 4, 2), quality=0.8,
                 corrected=False, has_mask=True, seg_vector=[0.5, -1.25, 3.0], request_id=request_id)


async def _with_store(url, body):
    store = RedisSessionStore(url)
    try:
        return await body(store)
    finally:
        await store.close()


def test_sessions_store_the_image_once_and_expire(redis_url):
    async def body(store):
        a = await store.create_session(IMAGE, SHA, (4, 6), metadata={"study": "1.2.3"}, ttl=60)
        b = await store.create_session(IMAGE, SHA, (4, 6))
        assert a.session_id != b.session_id and (await store.get_session(a.session_id)).metadata == {"study": "1.2.3"}
        assert StoreReader(store.url).image(SHA) == IMAGE
        assert len(await store.redis.keys(f"mr:image:{SHA}")) == 1
        assert 0 < await store.redis.ttl(f"mr:session:{a.session_id}") <= 60
        assert await store.redis.ttl(f"mr:image:{SHA}") > 60  # b's default TTL is longer: the image lives on
        assert await store.delete_session(a.session_id)
        with pytest.raises(SessionNotFound, match="does not exist or has expired"):
            await store.get_session(a.session_id)
    run(_with_store(redis_url, body))


def test_rounds_append_in_order_and_round_trip(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6))
        first = await store.append_round(s, a_round())
        s = await store.get_session(s.session_id)
        second = await store.append_round(s, a_round("Segment its lesion.", reference_round=1))
        assert (first.number, second.number) == (1, 2)
        stored = await store.rounds(s.session_id)
        assert [r.question for r in stored] == ["Segment the liver.", "Segment its lesion."]
        back = stored[1]
        assert back.mask.sum() == 6 and back.box == (2, 1, 4, 2) and back.reference_round == 1
        assert back.seg_vector == [0.5, -1.25, 3.0] and back.answer_ids == [5, 9, 2]
        expected = a_round("Segment its lesion.", reference_round=1)
        expected.number = 2
        assert back == expected  # every field round-trips
        assert StoreReader(store.url).rounds(s.session_id) == stored
        with pytest.raises(RoundNotFound, match="has rounds 1..2; there is no round 3"):
            await store.round(s.session_id, 3)
    run(_with_store(redis_url, body))


def test_a_retried_request_appends_once_and_a_stale_version_conflicts(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6))
        first = await store.append_round(s, a_round(request_id="req-1"))
        moved = await store.get_session(s.session_id)
        again = await store.append_round(moved, a_round("Different.", request_id="req-1"))
        assert again.number == first.number == 1 and again.question == "Segment the liver."
        assert len(await store.rounds(s.session_id)) == 1
        assert (await store.find_request(s.session_id, "req-1")).number == 1
        with pytest.raises(Conflict, match="moved from 0 rounds to 1"):
            await store.append_round(s, a_round())  # s still says 0 rounds
    run(_with_store(redis_url, body))


def test_concurrent_rounds_on_one_session_are_serialised(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6))

        async def one_round(name):
            async with store.lock(s.session_id):
                session = await store.get_session(s.session_id)
                await asyncio.sleep(0.05)  # the model's work
                return await store.append_round(session, a_round(name))

        done = await asyncio.gather(*(one_round(f"q{i}") for i in range(5)))
        assert sorted(r.number for r in done) == [1, 2, 3, 4, 5]
        assert sorted(r.question for r in await store.rounds(s.session_id)) == [f"q{i}" for i in range(5)]
    run(_with_store(redis_url, body))


def test_a_round_waiting_past_its_wait_for_the_lock_is_session_busy(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6))
        async with store.lock(s.session_id):
            with pytest.raises(SessionBusy, match="busy with another round"):
                async with store.lock(s.session_id, wait=0.05):
                    pass
    run(_with_store(redis_url, body))


def test_unreachable_redis_is_store_unavailable(tmp_path):
    async def body(store):
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.get_session("x")
    run(_with_store(f"unix://{tmp_path}/nothing.sock", body))
    with pytest.raises(StoreUnavailable, match="unreachable"):  # the model steps' reader too
        StoreReader(f"unix://{tmp_path}/nothing.sock").image(SHA)


def test_the_unreachable_message_names_no_host_and_no_password():
    url = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1

    async def body(store):
        with pytest.raises(StoreUnavailable) as caught:
            await store.get_session("0" * 32)
        return str(caught.value)

    for message in (run(_with_store(url, body)), _reader_message(url)):
        assert "unreachable" in message and not any(s in message for s in ("hunter2", "127.0.0.1", ":1", "redis://"))


def _reader_message(url):
    with pytest.raises(StoreUnavailable) as caught:
        StoreReader(url).image(SHA)
    return str(caught.value)


def test_a_round_stored_before_rounds_were_numbered_by_name_reads_back(redis_url):
    """Rounds written as {index (1-based), reference (0-based), has_seg} still read during a rolling upgrade."""
    old = json.loads(round_to_json(a_round(reference_round=1)))
    old["index"], old["reference"], old["has_seg"] = 2, old.pop("reference_round") - 1, old.pop("has_mask")
    del old["number"]
    back = round_from_json(json.dumps(old))
    assert (back.number, back.reference_round, back.has_mask) == (2, 1, True)


def test_the_image_and_its_encodings_leave_with_the_last_session_that_uses_them(redis_url):
    image = b"another image, used by two sessions"
    sha = hashlib.sha256(image).hexdigest()

    async def body(store):
        a = await store.create_session(image, sha, (4, 6), ttl=600)
        b = await store.create_session(image, sha, (4, 6), ttl=60)
        StoreReader(store.url).put_encoding("tiny-abc", sha, b"encoding holds the picture", ttl=3600)
        assert 590 < await store.redis.ttl(f"mr:encoding:tiny-abc:{sha}") <= 600  # never beyond the image
        assert await store.delete_session(a.session_id)
        assert StoreReader(store.url).image(sha) == image  # b still uses it
        assert await store.redis.ttl(f"mr:image:{sha}") <= 60  # ... but now only as long as b lives
        assert await store.redis.ttl(f"mr:encoding:tiny-abc:{sha}") <= 60
        assert await store.delete_session(b.session_id)
        assert await store.redis.keys(f"mr:*{sha}*") == []
        assert not await store.delete_session(b.session_id)
    run(_with_store(redis_url, body))


def test_an_image_no_session_stores_gets_no_shared_encoding(redis_url):
    sha = hashlib.sha256(b"a stateless Segment call's image").hexdigest()
    StoreReader(redis_url).put_encoding("tiny-abc", sha, b"encoding", ttl=3600)
    assert StoreReader(redis_url).encoding("tiny-abc", sha) is None


def test_a_round_extends_the_session_and_its_image_and_reads_do_not(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6), ttl=60)
        await store.redis.expire(f"mr:session:{s.session_id}", 30)  # as if 30 s had passed
        await store.get_session(s.session_id), await store.rounds(s.session_id)
        assert await store.redis.ttl(f"mr:session:{s.session_id}") <= 30
        await store.append_round(s, a_round())
        assert await store.redis.ttl(f"mr:session:{s.session_id}") > 30
        assert (await store.get_session(s.session_id)).expires > s.expires
    run(_with_store(redis_url, body))


def test_a_tenant_has_at_most_its_sessions_and_deleting_frees_one(redis_url):
    async def body(store):
        kept = await store.create_session(IMAGE, SHA, (4, 6), tenant="clinic-a", max_sessions=2)
        gone = await store.create_session(IMAGE, SHA, (4, 6), tenant="clinic-a", max_sessions=2)
        with pytest.raises(TooManySessions, match="2 live sessions"):
            await store.create_session(IMAGE, SHA, (4, 6), tenant="clinic-a", max_sessions=2)
        await store.create_session(IMAGE, SHA, (4, 6), tenant="clinic-b", max_sessions=2)  # its own count
        assert await store.tenant_sessions("clinic-a") == 2
        await store.delete_session(gone.session_id)
        assert (await store.create_session(IMAGE, SHA, (4, 6), tenant="clinic-a", max_sessions=2)).tenant == "clinic-a"
        assert (await store.get_session(kept.session_id)).tenant == "clinic-a"
    run(_with_store(redis_url, body))


HOLD_LOCK_AND_HANG = """
import asyncio, sys
from serving.store import RedisSessionStore

async def main():
    store = RedisSessionStore(sys.argv[1])
    async with store.lock(sys.argv[2]):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_lock_whose_holder_died_frees_itself_within_its_lease(redis_url):
    """The holder is killed with SIGKILL: nothing releases its lock, only the lease's end does."""
    import subprocess
    import sys

    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6))
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_AND_HANG, store.url, s.session_id],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            await asyncio.sleep(3 * store.lock_lease)  # renewed all along: still held
            with pytest.raises(SessionBusy):
                async with store.lock(s.session_id, wait=0.2):
                    pass
        finally:
            holder.kill()
            holder.wait()
        async with store.lock(s.session_id, wait=store.lock_lease + 1):  # was 120 s before leases
            pass
    run(_with_store(redis_url, body))


def test_each_tenant_stores_and_encodes_an_image_under_a_name_of_its_own(redis_url):
    """Otherwise a cache hit (or its speed) would tell one tenant that another has the same image."""
    async def body(store):
        a = await store.create_session(IMAGE, SHA, (4, 6), tenant="names-a")  # tenants no other test uses
        b = await store.create_session(IMAGE, SHA, (4, 6), tenant="names-b")
        anonymous = await store.create_session(IMAGE, SHA, (4, 6))
        assert a.image_sha256 == b.image_sha256 == SHA  # what clients are told: the bytes' SHA-256
        assert len({a.image_key, b.image_key, anonymous.image_key}) == 3 and anonymous.image_key == SHA
        assert (await store.get_session(a.session_id)).image_key == a.image_key
        assert StoreReader(store.url).image(a.image_key) == IMAGE
        await store.delete_session(a.session_id)
        assert await store.redis.exists(f"mr:image:{a.image_key}") == 0  # a's last session took it
        assert StoreReader(store.url).image(b.image_key) == IMAGE
        await store.delete_session(b.session_id)
        await store.delete_session(anonymous.session_id)
    run(_with_store(redis_url, body))


DICOM = DicomSource("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", "CT", 1, 1, "1.2.840.10008.1.2.1",
                    "MONOCHROME2", 1.0, -1024.0, 40.0, 400.0, "preset:ct-abdomen", False)


def test_a_dicom_sessions_header_lives_and_leaves_with_it(redis_url):
    async def body(store):
        s = await store.create_session(IMAGE, SHA, (4, 6), ttl=30, source_sha256="ab" * 32, dicom=DICOM,
                                       dicom_header=b"header without pixels")
        got = await store.get_session(s.session_id)
        assert got.dicom == DICOM and got.image_sha256 == "ab" * 32 and got.image_key == SHA  # stored as the picture
        assert await store.dicom_header(s.session_id) == b"header without pixels"
        header_key = f"mr:session:{s.session_id}:dicom"
        assert 0 < await store.redis.ttl(header_key) <= 30
        await store.append_round(got, a_round())
        await store.redis.expire(header_key, 5)  # a round gives it the session's life again
        await store.append_round(await store.get_session(s.session_id), a_round())
        assert await store.redis.ttl(header_key) > 5
        assert await store.delete_session(s.session_id)
        assert not await store.redis.exists(header_key)
        plain = await store.create_session(IMAGE, SHA, (4, 6))
        assert (await store.get_session(plain.session_id)).dicom is None
        with pytest.raises(SessionNotFound, match="no DICOM source"):
            await store.dicom_header(plain.session_id)
    run(_with_store(redis_url, body))


def test_a_retried_create_session_makes_one_session_and_its_id_with_another_image_is_refused(redis_url):
    other = b"\x89PNG another image"
    other_sha = hashlib.sha256(other).hexdigest()

    async def body(store):
        tenant = "create-once"  # a tenant no other test uses: its counts are this test's
        made = await store.create_session(IMAGE, SHA, (4, 6), ttl=60, tenant=tenant, max_sessions=1,
                                          request_id="create-1")
        again = await store.create_session(IMAGE, SHA, (4, 6), ttl=60, tenant=tenant, max_sessions=1,
                                           request_id="create-1")  # at its limit, yet the retry is answered
        assert again.session_id == made.session_id and await store.tenant_sessions(tenant) == 1
        remembered = f"mr:tenant:{tenant}:create:create-1"
        assert await store.redis.get(remembered) == made.session_id.encode()
        assert 0 < await store.redis.ttl(remembered) <= 60
        with pytest.raises(RequestIdReused, match=f"already made session {made.session_id} on another image"):
            await store.create_session(other, other_sha, (4, 6), tenant=tenant, request_id="create-1")
        assert await store.tenant_sessions(tenant) == 1
        assert not await store.redis.exists(f"mr:image:{content_key(other_sha, tenant)}")  # nothing was stored
        elsewhere = await store.create_session(IMAGE, SHA, (4, 6), tenant=f"{tenant}-b", request_id="create-1")
        assert elsewhere.session_id != made.session_id  # request ids are each tenant's own

        await store.redis.expire(remembered, 5)  # a round gives it the session's life again
        await store.append_round(made, a_round())
        assert await store.redis.ttl(remembered) > 5
        assert await store.delete_session(made.session_id)
        assert not await store.redis.exists(remembered)  # it leaves with its session
        anew = await store.create_session(IMAGE, SHA, (4, 6), tenant=tenant, max_sessions=1, request_id="create-1")
        assert anew.session_id != made.session_id
    run(_with_store(redis_url, body))
