"""One call: its pipecat pipeline, built from provider services, and its lifecycle.

    transport in -> Silero VAD -> STT -> DTMF -> user aggregator -> LLM -> TTS
                 -> transport out -> assistant aggregator

The builder knows nothing about any provider: it asks each configured provider for a
service and wires them together. The greeting is pre-rendered and written straight into the
playout buffer as soon as the call starts, while the pipeline is still starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.dtmf_aggregator import DTMFAggregator
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.turns.user_start import (
    BaseUserTurnStartStrategy,
    MinWordsUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.types import NOT_GIVEN

from vc import events
from vc.call import CallConnection, CallEvents
from vc.capabilities import tools_unavailable
from vc.heard import UnheardReply
from vc.llm import StreamingLLMService, tools_schema
from vc.logs import current_call_id
from vc.media import CallerAudioEnd, CallTransport, SpeechWrittenFrame
from vc.monitor import MonotonicClock, TurnMonitor
from vc.pipecat_adapter import announce_held_replies
from vc.providers import CallContext, Tool, ToolCall
from vc.tools import redact, run_tool
from vc.turns import (
    AdaptiveTurnEnd,
    ListeningTurnStart,
    continuation_words,
    is_backchannel,
    sounds_unfinished,
)
from vc.vad import WINDOW_S, CallVADProcessor

if TYPE_CHECKING:
    from vc.engine import Engine

#: Longest a bot-side action (hang-up, transfer) waits for what the bot is saying before it
#: to be synthesised and heard: a stuck TTS or transport cannot keep a call open longer.
AFTER_SPEECH_TIMEOUT = 20.0
#: Longest the bot stays paused for a sound that never becomes a confirmed turn.
MAX_PAUSE_S = 2.5
#: A sound too short to be speech resumes the bot only after this much quiet: words said with
#: gaps ("stop ... stop") each look like one, and the bot must not play between them.
RESUME_AFTER_QUIET_S = 0.3
#: A TTS error this soon after a barge-in belongs to the turn the caller cut off.
INTERRUPTED_GRACE_S = 1.0


class CallSession(CallEvents):
    """Runs one call from answer to hang-up."""

    def __init__(self, engine: Engine, connection: CallConnection) -> None:
        self.engine = engine
        self.connection = connection
        self.info = connection.info
        self.profile = connection.profile or engine.select_profile(self.info)
        connection.profile = self.profile
        self.log = logging.LoggerAdapter(
            logging.getLogger("vc.call"), {"call_id": self.info.call_id}
        )
        self.outcome = "completed"
        self.ended_by = ""
        self._task: PipelineTask | None = None
        self._transport: CallTransport | None = None
        self._marks: dict[str, asyncio.Future[None]] = {}
        self._mark_seq = 0
        self._after_speech: list[Callable[[], Awaitable[None]]] = []
        #: SpeechWrittenFrames on their way through the pipeline (a barge-in drops them)
        self._speech_waits: set[asyncio.Future[None]] = set()
        self._llm_busy = False
        #: An answer has started (LLM) and none of its audio has been written yet.
        self._answer_unheard = False
        self._spoke_this_turn = False
        self._greeting_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.monitor: TurnMonitor | None = None
        self.turn_end: AdaptiveTurnEnd | None = None
        self.listening: ListeningTurnStart | None = None
        self.context: LLMContext | None = None
        self._unheard: UnheardReply | None = None  # the reply an apology replaced (vc.heard)
        self.barge_ins = 0
        self._pause_on_speech = False
        self._apology_until = 0.0  # monotonic time the apology now playing ends
        self._interrupted_at = -1e9  # monotonic time of the last barge-in (any interruption)
        self._interruptions = 0
        self.apologies = 0  # pre-rendered apologies played for failed STT/TTS turns
        self.failures: list[tuple[str, str]] = []  # (kind, reason) of each provider failure
        self._paused = 0  # the pause episode in progress (0: the bot is not paused)
        self._silenced_at = 0.0  # monotonic time of the last pause
        self._onsets = 0  # speech onsets so far (vc.vad.CallVADProcessor)
        self._speech_from: float | None = None  # onset of speech over the bot (see vc.vad)
        self._vad_processor: CallVADProcessor | None = None
        self.pauses = 0  # times the bot was paused because the caller seemed to talk

    # -- CallEvents (called by the transport) ---------------------------------------------

    def audio(self, pcm: bytes) -> None:
        if self._transport is not None:
            self._transport.input().feed_audio(pcm)

    def dtmf(self, digit: str) -> None:
        if self._transport is not None:
            self._spawn(self._transport.input().feed_dtmf(digit))
        self.engine.event(self.info, events.DTMF, {"digit": digit})

    def mark_played(self, name: str) -> None:
        fut = self._marks.pop(name, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        self.engine.event(self.info, events.MARK_PLAYED, {"name": name})

    def hangup(self, reason: str = "caller hung up") -> None:
        if not self.ended_by:
            self.ended_by = reason
            self.log.info("call ended: %s", reason)
        if self._task is not None:
            self._spawn(self._task.cancel(reason=reason))

    # -- building ------------------------------------------------------------------------

    def _call_context(self, stt_rate: int) -> CallContext:
        return CallContext(
            info=self.info,
            profile=self.profile,
            input_sample_rate=stt_rate,
            output_sample_rate=self.connection.sample_rate,
            log=self.log,
        )

    def build(self) -> PipelineTask:
        engine, profile = self.engine, self.profile
        stt_p = engine.provider("stt", profile.stt)
        llm_p = engine.provider("llm", profile.llm)
        tts_p = engine.provider("tts", profile.tts)
        stt_rate = stt_p.sample_rate
        ctx = self._call_context(stt_rate)

        stt = stt_p.create_service(ctx)
        llm = llm_p.create_service(ctx)
        tts = tts_p.create_service(ctx)

        self._transport = transport = CallTransport(
            self.connection,
            on_barge_in=self._on_barge_in,
            on_utterance_written=self._on_utterance_written,
            on_first_audio=self._on_first_audio,
        )

        vad_cfg = engine.config.vad
        stop_secs = _first(profile.vad_stop_secs, vad_cfg.effective_stop_secs())
        turn_end = self._turn_end(stop_secs)
        vad = engine.take_vad(
            VADParams(
                confidence=_first(profile.vad_confidence, vad_cfg.confidence),
                start_secs=_first(profile.vad_start_secs, vad_cfg.effective_start_secs()),
                stop_secs=stop_secs if turn_end is None else
                min(stop_secs, engine.config.turn.segment_secs),
                min_volume=engine.min_volume(),
            ),
            stt_rate,
        )

        tools = self._tools(llm_p)
        messages: list[dict[str, Any]] = []
        if profile.greeting:
            messages.append({"role": "assistant", "content": profile.greeting})
        self.context = context = LLMContext(
            messages=cast(Any, messages), tools=tools_schema(tools) if tools else NOT_GIVEN
        )
        self._unheard = UnheardReply(context)
        for tool in tools:
            llm.register_function(tool.name, self._tool_handler(tool))

        interrupt_cfg = engine.config.interruption
        interruptions = _first(profile.interruptions, interrupt_cfg.enabled)
        min_words = _first(profile.min_words, interrupt_cfg.effective_min_words())
        start: list[BaseUserTurnStartStrategy]
        if min_words > 1:
            start = [MinWordsUserTurnStartStrategy(min_words=min_words, enable_interruptions=interruptions)]
        elif interruptions and interrupt_cfg.backchannels:
            language = profile.language
            self.listening = ListeningTurnStart(
                backchannel=lambda text: is_backchannel(text, language),
                dismissed=self._on_not_a_turn,
                long_secs=interrupt_cfg.long_speech_secs,
            )
            start = [self.listening]
        else:
            start = [
                VADUserTurnStartStrategy(enable_interruptions=interruptions),
                # DTMF arrives as a transcript with no speech: it must open a turn too.
                TranscriptionUserTurnStartStrategy(enable_interruptions=interruptions),
            ]
        # Pausing at the first sign of speech only makes sense where any speech interrupts.
        self._pause_on_speech = interruptions and min_words <= 1 and interrupt_cfg.pause_on_speech
        self._vad_processor = vad_processor = CallVADProcessor(
            vad_analyzer=vad,
            onset_windows=round(interrupt_cfg.pause_after_ms / 32) or 1,
            on_onset=self._on_speech_onset,
            on_quiet=self._on_speech_quiet,
            level_margin_db=interrupt_cfg.pause_on_level_db if self._pause_on_speech else 0.0,
            pause_windows=round(engine.config.turn.early_transcript_secs / WINDOW_S),
        )
        user_agg, assistant_agg = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=start,
                    stop=[turn_end or SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)],
                ),
            ),
        )
        self._watch_llm(llm)
        if turn_end is not None and turn_end.speculate and isinstance(llm, LLMService):
            announce_held_replies(llm)  # the TTS may prepare a held reply's first audio
        if isinstance(llm, StreamingLLMService):
            llm.call_id = self.info.call_id
            llm.on_failure = lambda reason: self._provider_failed("llm", reason)
        self._watch_errors("stt", stt)
        self._watch_errors("tts", tts)
        self._watch_replies(assistant_agg)

        pipeline = Pipeline(
            [
                transport.input(),
                vad_processor,
                stt,
                CallerAudioEnd(),
                DTMFAggregator(prefix=self.profile.dtmf_prefix),
                user_agg,
                llm,
                tts,
                transport.output(),
                assistant_agg,
            ]
        )
        clock = MonotonicClock()
        self.monitor = TurnMonitor(
            clock,
            report=lambda stage, s: engine.latency(self.info, stage, s),
            event=lambda name, data: engine.event(self.info, name, data),
        )
        self._task = PipelineTask(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=stt_rate,
                audio_out_sample_rate=self.connection.sample_rate,
                enable_metrics=True,
            ),
            clock=clock,
            observers=[self.monitor],
            idle_timeout_secs=None,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )
        return self._task

    def _turn_end(self, complete_secs: float) -> AdaptiveTurnEnd | None:
        """The adaptive end of turn (vc.turns), or None where the turn ends on silence alone."""
        cfg = self.engine.config.turn
        if cfg.end != "adaptive":
            return None
        language = self.profile.language
        words = continuation_words(language, cfg.continuation_words.split())
        self.turn_end = AdaptiveTurnEnd(
            complete_secs=complete_secs,
            incomplete_secs=cfg.incomplete_secs,
            unfinished=lambda text: sounds_unfinished(text, language, words),
            speculate=cfg.speculate,
        )
        return self.turn_end

    def _tools(self, llm_provider: Any) -> list[Tool]:
        lost = tools_unavailable(llm_provider, self.profile)
        if lost and not self.engine.config.source.legacy:  # the old engine had no tools
            # Also a configuration warning (vc.capabilities); here so each call's log says it.
            self.log.warning(
                "tools %s not offered: llm provider %r does not support tools",
                ", ".join(lost), llm_provider.name,
            )
        if not llm_provider.supports_tools:
            return []
        wanted = self.profile.tools
        return [t for name, (t, _) in self.engine.registry.tools.items() if name in wanted]

    def _tool_handler(self, tool: Tool) -> Callable[[FunctionCallParams], Awaitable[None]]:
        async def handle(params: FunctionCallParams) -> None:
            raw = params.arguments
            args: Any = dict(raw) if isinstance(raw, Mapping) else raw
            self.engine.event(
                self.info, events.TOOL_CALL, {"name": tool.name, "arguments": redact(args)}
            )
            call = ToolCall(
                arguments=args,
                connection=self.connection,
                info=self.info,
                profile=self.profile,
                after_speech=self.after_speech,
                say=self.say,
                end=self.end,
                spoke_this_turn=self._spoke_this_turn,
            )
            result = await run_tool(
                tool, call, call_id=self.info.call_id, metrics=self.engine.metrics
            )
            from pipecat.frames.frames import FunctionCallResultProperties

            run_llm = not (isinstance(result, dict) and result.get("_final"))
            if isinstance(result, dict):
                result = {k: v for k, v in result.items() if k != "_final"}
            await params.result_callback(result, properties=FunctionCallResultProperties(run_llm=run_llm))

        return handle

    def _watch_llm(self, llm: Any) -> None:
        """Whether the LLM is answering and has said anything this turn (pipecat's public
        ``on_before_push_frame`` event of the LLM service)."""
        from pipecat.frames.frames import (
            LLMContextFrame,
            LLMFullResponseEndFrame,
            LLMFullResponseStartFrame,
            LLMTextFrame,
        )

        async def watch(_service: Any, frame: Any) -> None:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._llm_busy, self._spoke_this_turn = True, False
                self._answer_unheard = True
            elif isinstance(frame, LLMTextFrame) and frame.text.strip():
                self._spoke_this_turn = True
            elif isinstance(frame, LLMFullResponseEndFrame):
                self._llm_busy = False

        async def asked(_service: Any, frame: Any) -> None:
            # A request is about to be built from the context: an apology still waiting for
            # its place goes in first, so this request already sees it (vc.heard).
            if isinstance(frame, LLMContextFrame) and self._unheard is not None:
                self._unheard.answer_started()

        llm.add_event_handler("on_before_push_frame", watch)
        llm.add_event_handler("on_before_process_frame", asked)

    def _watch_replies(self, assistant_agg: Any) -> None:
        """A reply committed to the context after its speech failed is replaced by the apology
        (pipecat's public ``on_assistant_turn_stopped`` event; vc.heard)."""

        async def committed(_aggregator: Any, _message: Any) -> None:
            if self._unheard is not None:
                self._unheard.committed()

        assistant_agg.add_event_handler("on_assistant_turn_stopped", committed)

    def _watch_errors(self, kind: str, service: Any) -> None:
        """Every error pipecat reports for ``service`` (an exception in ``run_stt``/``run_tts``,
        an ErrorFrame it yields) is a failed turn: counted, and apologised for (pipecat's
        public ``on_error`` event, raised before the error frame goes upstream)."""

        async def failed(_service: Any, error: Any) -> None:
            self._provider_failed(kind, str(getattr(error, "error", error)))
            # A call outlives an outage: the next turn tries the service again.
            if not service.is_usable:
                await service.set_usable(True)

        service.add_event_handler("on_error", failed)

    def _provider_failed(self, kind: str, reason: str) -> None:
        name = getattr(self.profile, kind, "") or self.engine.config.default_providers[kind]
        if kind == "tts" and time.monotonic() - self._interrupted_at < INTERRUPTED_GRACE_S:
            # The caller talked over this turn (pipecat reports the cancelled TTS request as
            # "no audio"): they are speaking now, and an apology would talk over them.
            self.log.info("%s provider %s: %s (after a barge-in: no apology)", kind, name, reason)
            return
        if kind != "llm" and time.monotonic() < self._apology_until:
            # The same failure reported again (pipecat follows a failed request with "no audio"):
            # the turn is already apologised for and counted.
            self.log.debug("%s provider %s: %s", kind, name, reason)
            return
        self.failures.append((kind, reason))
        self.engine.provider_failed(self.info, kind, name)
        self.log.warning("%s provider %s failed the turn: %s", kind, name, reason)
        if kind == "llm":  # the LLM service says its apology itself (through the TTS)
            self.engine.apologised(self.info, kind)
        else:
            clip_bytes = len(self.engine.apology_audio(self.profile, self.connection.sample_rate))
            self._apology_until = time.monotonic() + clip_bytes / 2 / self.connection.sample_rate + 1.0
            self._spawn(self._play_apology(kind))

    async def _play_apology(self, kind: str) -> None:
        """The profile's pre-rendered apology, straight into the playout (as the greeting): it
        plays even when the TTS is what failed. Once per failed turn."""
        clip = self.engine.apology_audio(self.profile, self.connection.sample_rate)
        if not clip:
            self.log.warning("no pre-rendered apology for profile %s: the turn stays silent",
                             self.profile.name)
            return
        self.apologies += 1
        self.engine.apologised(self.info, kind)
        if kind == "tts" and self._unheard is not None:
            # The caller hears the apology, not the reply: the context says so too.
            self._unheard.failed(self.engine.apology_text(self.profile))
        playout = self.connection.playout
        step = playout.frame_bytes
        interruptions = self._interruptions
        for i in range(0, len(clip), step):  # frame by frame: the TTS may be writing too
            if self._interruptions != interruptions:
                return  # the caller talked over it: the barge-in cleared what was written
            await playout.write(clip[i : i + step])
        playout.mark(self._next_mark("apology"))

    # -- running -------------------------------------------------------------------------

    async def run(self) -> str:
        started = time.monotonic()
        # Every task pipecat starts for this call inherits it: their log lines name the call.
        call_token = current_call_id.set(self.info.call_id)
        self.connection.attach(self)
        self.engine.call_started(self.info, self.profile.name)
        try:
            self._start_greeting()
            task = self.build()
            if self.ended_by:  # the caller hung up while the call was being set up
                return self.outcome
            if self.profile.max_duration > 0:
                self._spawn(self._time_limit(self.profile.max_duration))
            runner = PipelineRunner(handle_sigint=False, handle_sigterm=False)
            await runner.add_workers(task)
            await runner.run()
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        except Exception as e:
            self.outcome = "error"
            self.log.exception("call failed: %s", e)
        finally:
            for t in list(self._background):
                t.cancel()
            if self._greeting_task:
                self._greeting_task.cancel()
            if not self.ended_by:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.connection.hangup())
            self._report_media_quality()
            self.engine.call_ended(self.info, self.outcome, time.monotonic() - started)
            current_call_id.reset(call_token)
        return self.outcome

    def _report_barge_in_latency(self) -> None:
        """The caller's speech onset (as vc heard it) to the bot's audio stopping: at the pause
        when the bot was paused for this speech, else now (the clear)."""
        if self._speech_from is None:
            return
        stopped = self._silenced_at if self._paused else time.monotonic()
        self.engine.latency(self.info, "barge_in", max(0.0, stopped - self._speech_from))
        self._speech_from = None

    def _report_media_quality(self) -> None:
        try:
            quality = self.connection.media_quality()
        except Exception as e:  # a transport's statistics never fail the call's end
            self.log.warning("media statistics unavailable: %s: %s", type(e).__name__, e)
            return
        if quality is not None:
            self.engine.media_quality(self.info, quality)

    async def _time_limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.log.info("call reached its %.0fs limit", seconds)
        if self.profile.max_duration_goodbye:
            await self.say(self.profile.max_duration_goodbye)
        await self._run_after_speech(lambda: self.end("maximum call duration reached"))

    def _start_greeting(self) -> None:
        clip = self.engine.greeting_audio(self.profile, self.connection.sample_rate)
        if clip:
            self._greeting_task = asyncio.create_task(self._play_greeting(clip))

    async def _play_greeting(self, pcm: bytes) -> None:
        await self.connection.playout.write(pcm)
        self.connection.playout.mark(self._next_mark("greeting"))

    def _next_mark(self, prefix: str = "utt") -> str:
        self._mark_seq += 1
        name = f"{prefix}-{self._mark_seq}"
        self._marks[name] = asyncio.get_running_loop().create_future()
        return name

    def _on_first_audio(self) -> None:
        self._answer_unheard = False
        if self.monitor is not None:
            self.monitor.first_audio_written()

    def _on_utterance_written(self) -> None:
        self.connection.playout.mark(self._next_mark())

    async def _on_speech_onset(self) -> None:
        self._onsets += 1
        if self.turn_end is not None:
            await self.turn_end.hold()
        transport = self._transport
        if transport is None:
            return
        # An answer still being written counts too: a caller who goes on after a pause the
        # turn ended at must not hear its first syllables before the interruption cancels it.
        talking = transport.output().bot_audio_pending() or self._answer_unheard
        if talking and not self._paused:  # a barge-in's latency counts from this speech
            self._speech_from = self._vad_processor.speech_from if self._vad_processor else None
        if not self._pause_on_speech or self._paused or not talking:
            return
        self.pauses += 1
        self._paused = episode = self.pauses
        await self.connection.pause()
        self._silenced_at = time.monotonic()
        self.log.debug("the caller may be talking: bot audio paused")
        self.engine.event(self.info, events.BOT_PAUSED, {})
        self._spawn(self._unpause_later(episode))

    async def _on_speech_quiet(self) -> None:
        if self.turn_end is not None:
            await self.turn_end.release()
        if self.listening is not None and self.listening.pending:
            return  # its words decide (ListeningTurnStart): _on_not_a_turn or a barge-in
        if self._vad_processor is not None and self._vad_processor.user_speaking:
            # The VAD confirmed it as speech, and the gap is one between words ("stop ...
            # stop"): the turn strategy has it on its way (its frame may still be queued
            # behind the STT), so a verdict or a barge-in follows. Resuming now would play a
            # burst of the bot between the caller's words.
            return
        if self._paused and self._vad_processor is not None and self._vad_processor.noise_only:
            await self._resume()  # a cough, a click: no speech to wait for more of
        elif self._paused:
            self._spawn(self._resume_unless_more(self._onsets))

    async def _resume_unless_more(self, onsets: int) -> None:
        await asyncio.sleep(RESUME_AFTER_QUIET_S)
        if self._onsets == onsets:  # no new speech meanwhile: it was a noise
            await self._resume()

    async def _on_not_a_turn(self) -> None:
        """Speech over the bot that was not a turn ("mm-hmm", a cough): play on."""
        self.log.debug("not a turn: the bot plays on")
        await self._resume()

    async def _resume(self) -> None:
        if self._paused:
            self._paused = 0
            await self.connection.resume()
            self.log.debug("it was not a turn: bot audio resumed")
            self.engine.event(self.info, events.BOT_RESUMED, {})

    async def _unpause_later(self, episode: int) -> None:
        # Choppy sound can pause the bot without ever confirming a turn: do not stay silent.
        await asyncio.sleep(MAX_PAUSE_S)
        if self._paused == episode:
            await self._resume()

    def _on_barge_in(self, had_audio: bool) -> None:
        if had_audio:
            self._report_barge_in_latency()
        if self._paused and not had_audio:
            # Paused before any audio of the answer was written: nothing to clear, but the
            # connection must play again for the answer to come.
            self._spawn(self.connection.resume())
        self._paused = 0  # the connection's clear dropped the held audio
        self._answer_unheard = False
        self._interruptions += 1
        if had_audio:
            self._interrupted_at = time.monotonic()
        if had_audio:
            self.barge_ins += 1
            self.engine.event(self.info, events.BARGE_IN, {})
        if self._greeting_task and not self._greeting_task.done():
            self._greeting_task.cancel()
        # Marks dropped with the audio will never be echoed as played.
        for name, fut in list(self._marks.items()):
            if not fut.done():
                fut.cancel()
            self._marks.pop(name, None)
        # Nor will the speech markers dropped with the frames: what they waited for is gone.
        for fut in list(self._speech_waits):
            if not fut.done():
                fut.set_result(None)

    # -- call control for tools -------------------------------------------------------------

    async def say(self, text: str) -> None:
        """Speak ``text`` now (through the TTS, so it is interruptible and heard-tracked)."""
        if self._task is not None:
            await self._task.queue_frame(TTSSpeakFrame(text))

    def after_speech(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` once everything the bot is saying has been heard by the caller."""
        self._spawn(self._run_after_speech(action))

    async def _run_after_speech(self, action: Callable[[], Awaitable[None]]) -> None:
        deadline = time.monotonic() + AFTER_SPEECH_TIMEOUT
        # The model finishes its reply (the text it streams before a tool call included)...
        await asyncio.sleep(0.05)
        while self._llm_busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # ...the TTS synthesises all of that text (and whatever `say` queued) and its audio is
        # written into the playout buffer: a marker frame follows it through the pipeline...
        if not await self._speech_written(deadline):
            self.log.warning(
                "the bot's last words were not synthesised within %.0fs: acting without them",
                AFTER_SPEECH_TIMEOUT,
            )
        # ...and the transport confirms the caller heard the last of it.
        name = self._next_mark("final")
        self.connection.playout.mark(name)
        fut = self._marks.get(name)
        if fut is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(fut, max(0.1, deadline - time.monotonic()))
        await action()

    async def _speech_written(self, deadline: float) -> bool:
        """Wait until everything queued for the bot to say so far is in the playout buffer;
        False when that did not happen by ``deadline``."""
        if self._task is None or self._task.has_finished():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech_waits.add(fut)
        try:
            await self._task.queue_frame(SpeechWrittenFrame(written=fut))
            await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
            return True
        except TimeoutError:
            return False
        finally:
            self._speech_waits.discard(fut)

    async def end(self, reason: str) -> None:
        """Bot-side hang-up."""
        if not self.ended_by:
            self.ended_by = reason
            self.log.info("bot ends the call: %s", reason)
        try:
            await self.connection.hangup()
        finally:
            if self._task is not None:
                await self._task.queue_frame(EndFrame())
                self._spawn(self._cancel_soon())

    async def _cancel_soon(self) -> None:
        await asyncio.sleep(1.0)
        if self._task is not None and not self._task.has_finished():
            await self._task.cancel(reason="call ended")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _first(value: Any, default: Any) -> Any:
    """A profile's override, or the global setting when the profile leaves it unset."""
    return default if value is None else value
