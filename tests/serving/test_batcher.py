"""The Reasoner's batching policy: a lone dialogue never waits; dialogues in step decode together."""

import asyncio
import random
import time

from serving.deployments import DialogueBatcher


def _recording():
    sizes = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.01)  # the model's work
        return [f"answer to {item}" for item in items]

    return run, sizes


def test_a_lone_dialogue_never_waits_for_others():
    run, sizes = _recording()

    async def dialogue():
        batcher = DialogueBatcher(run, max_wait_s=1.0)
        for k in range(4):
            start = time.perf_counter()
            assert await batcher.submit("s1", k) == f"answer to {k}"
            assert time.perf_counter() - start < 0.2  # far below max_wait_s
            await asyncio.sleep(0.005)

    asyncio.run(dialogue())
    assert sizes == [1, 1, 1, 1]


def test_dialogues_in_step_are_decoded_together_not_in_fragments():
    run, sizes = _recording()
    rng = random.Random(0)

    async def main():
        batcher = DialogueBatcher(run, max_wait_s=1.0)

        async def dialogue(name):
            for k in range(4):
                assert await batcher.submit(name, (name, k)) == f"answer to {(name, k)}"
                await asyncio.sleep(rng.uniform(0.0, 0.02))  # decoding the mask, the client, the next request

        await asyncio.gather(*(dialogue(f"s{i}") for i in range(6)))

    asyncio.run(main())
    assert sum(sizes) == 24 and sizes[0] == 6
    assert sizes == [6, 6, 6, 6]  # staggered arrivals, yet one batch per round
