"""The gRPC servicer's ScoreStream with a real engine, driven in-process: a client that
sends but does not read stops the server reading (bounded memory per stream)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from referee.config import Settings
from referee.engine import RewardEngine
from referee.grpc.servicer import STREAM_MESSAGES_IN_FLIGHT, RefereeServicer
from referee.metrics import Metrics
from referee_client._proto import referee_pb2 as pb

CONFIG = {
    "scorers": {"meta": {"kind": "python",
                         "options": {"function": "tests.probes:metadata_value"}}},
    "pipelines": {"meta": {"reward": "meta"}},
}  # fmt: skip


class _Context:
    """The one thing the servicer asks of grpc's context on the happy path."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


async def test_a_stream_whose_client_does_not_read_stops_being_read() -> None:
    engine = RewardEngine(Settings.model_validate(CONFIG))
    await engine.start()
    read = 0

    async def requests() -> AsyncIterator[pb.RewardRequest]:
        nonlocal read
        for i in range(2000):
            message = pb.RewardRequest(pipeline="meta")
            item = message.items.add(id=f"i{i}", response="x")
            item.metadata.update({"score": i})
            read += 1
            yield message

    servicer = RefereeServicer(engine, Metrics(), [])
    stream = servicer.ScoreStream(requests(), _Context())  # type: ignore[arg-type]
    try:
        first = await anext(stream)  # the client reads one answer, then stops reading
        assert first.results[0].reward is not None
        await asyncio.sleep(1.0)  # ample time to score all 2,000 if nothing pushed back
        # at most: a full answer queue, a slot's worth waiting to enqueue, and the one read
        assert read <= 2 * STREAM_MESSAGES_IN_FLIGHT + 2, read
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()
        await engine.close(grace_s=1.0)
