"""A scripted gRPC backend for the gateway's own tests: the real front interceptor (bearer auth) in front of a
servicer whose answers the request chooses, so every status code, an error after the answer, and a stream held
open between its events can be produced on demand. The gateway and the backend share one event loop on a thread,
as in ``mediround serve --http``."""

from __future__ import annotations

import asyncio
import io
import threading

import grpc
from PIL import Image, ImageDraw

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.front.server import _Front
from serving.front.tenants import TenantRegistry
from serving.http.server import Gateway, HttpOptions

TOKEN = "s3cret-token"
SESSION = "0123456789abcdef0123456789abcdef"
CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


def _png(value: int, box=None) -> bytes:
    image = Image.new("L", (4, 4), value)
    if box:
        ImageDraw.Draw(image).rectangle(box, fill=255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE_PNG = _png(100)
MASK_PNG = _png(0, (1, 2, 3, 3))  # foreground x 1..3, y 2..3
ROUND = pb.Round(session_id=SESSION, number=1, question="Segment the liver.", answer="It is [SEG].", has_mask=True,
                 mask_png=MASK_PNG, box=pb.Box(x_min=1, y_min=2, x_max=3, y_max=3), quality=0.5, corrected=True,
                 reference_round=0, request_id="r1")


class ScriptedServicer(pb_grpc.MediRoundServicer):
    """CreateRound / StreamRound fail with the status code their question names ("NOT_FOUND"...); StreamRound's
    question "fail after answer" fails after its answer event, "hold" waits for ``release`` between its events."""

    def __init__(self):
        self.requests: list = []
        self.metadata: list[dict] = []
        self.release = threading.Event()

    def _seen(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))

    async def CreateSession(self, request, context):
        self._seen(request, context)
        if request.image.startswith(b"GIF8"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "images must be PNG (8- or 16-bit), JPEG or TIFF; "
                                                                  "got GIF")
        return pb.Session(id=SESSION, width=4, height=4, metadata=request.metadata)

    async def GetSession(self, request, context):
        self._seen(request, context)
        if request.session_id != SESSION:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id}")
        return pb.Session(id=SESSION, width=4, height=4)

    async def GetSessionImage(self, request, context):
        self._seen(request, context)
        return pb.SessionImage(image=IMAGE_PNG, media_type="image/png")

    async def DeleteSession(self, request, context):
        self._seen(request, context)
        return pb.DeleteSessionResponse(deleted=request.session_id == SESSION)

    async def ListRounds(self, request, context):
        self._seen(request, context)
        return pb.ListRoundsResponse(rounds=[] if request.session_id != SESSION else [ROUND])

    async def CreateRound(self, request, context):
        self._seen(request, context)
        if request.question in grpc.StatusCode.__members__:
            await context.abort(grpc.StatusCode[request.question], f"the server says {request.question}")
        return ROUND

    async def StreamRound(self, request, context):
        self._seen(request, context)
        if request.question in grpc.StatusCode.__members__:
            await context.abort(grpc.StatusCode[request.question], f"the server says {request.question}")
        yield pb.RoundEvent(answer=ROUND.answer)
        if request.question == "hold" and not await asyncio.to_thread(self.release.wait, 5):
            # the test releases the round only once it has the answer: a gateway that buffered never gets it
            await context.abort(grpc.StatusCode.ABORTED, "nobody released the held round")
        if request.question == "fail after answer":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the mask decoder's replica went away")
        yield pb.RoundEvent(round=ROUND)

    async def GetRound(self, request, context):
        self._seen(request, context)
        if request.number != 1:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no round {request.number}")
        return ROUND

    async def GetSegmentation(self, request, context):
        self._seen(request, context)
        if request.session_id != SESSION:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the session was not opened on DICOM")
        return pb.Segmentation(dicom=b"\0" * 128 + b"DICM a segmentation", rounds=[1, 3], skipped_rounds=[2])


class Backend:
    """The scripted server and gateways onto it, on one event loop in a thread; ``gateway(**options)`` adds one."""

    def __init__(self):
        self.servicer = ScriptedServicer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateways: list[Gateway] = []
        self.server, self.address = self._run(self._start())

    def _run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self):
        server = grpc.aio.server(interceptors=[_Front(TenantRegistry.single(TOKEN))])
        pb_grpc.add_MediRoundServicer_to_server(self.servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, f"127.0.0.1:{port}"

    def gateway(self, **options) -> str:
        """A gateway onto the backend with these ``HttpOptions``; its base URL."""
        gateway = self._run(Gateway(HttpOptions(port=0, **options)).start(self.address))
        self.gateways.append(gateway)
        return gateway.url.rstrip("/")

    def close(self) -> None:
        for gateway in self.gateways:
            self._run(gateway.stop())
        self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
