"""Several conversations at once on one llama.cpp model: parallel sequences, batched decoding.

One llama.cpp context holds ``n_seq`` sequences (slots), each in a KV cache stream of its own
(a token attends over its own conversation's cells only, not every call's). A single thread
runs the loop: every step it builds one batch holding the next token of every reply being
generated and, with the room left, chunks of the prompts waiting to be evaluated, and decodes
it at once. So a caller's question is not queued behind another call's whole reply (it joins
the next step), and every conversation keeps its own history in the cache between turns
(alternating calls no longer evict each other's prompts).

* A request names its conversation (the call). It takes the idle slot that served that
  conversation before (its earlier turns are still cached), else a slot whose content is all a
  prefix of its prompt (an empty one: nothing is lost), else the least recently used one. The
  longest prefix any slot holds (the system prompt, warmed at startup) is shared into the chosen
  slot (``llama_memory_seq_cp`` copies the donor's whole stream; nothing is evaluated).
  Prefixes alone cannot tell whose a slot is: every call starts with the same system prompt and
  greeting, so a second call would take the first call's slot and evict its history.
* A finished reply's slot goes on to evaluate what the template writes after it
  (:attr:`BatchedDecoder.next_turn`: ``<|im_end|>\n<|im_start|>user\n``) while the caller
  listens, so the call's next prompt starts with those tokens cached; a request that arrives
  first simply takes over the slot.
* Requests beyond ``n_seq`` wait in order; :attr:`Generation.queued` measures the wait. A
  conversation whose slot another one took (more calls than ``n_seq``) evaluates its whole
  history again on its next turn: :attr:`BatchedDecoder.evictions` counts it, and it is logged.
* Sampling per request: repeat penalty, top-p, temperature, seeded (greedy at temperature 0).

This module owns every use of llama-cpp-python's low-level API (``llama_cpp.llama_cpp``).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from vc.logs import LogThrottle

log = logging.getLogger("vc.llm.llama_cpp")

#: Sampling constants as llama-cpp-python's ``create_completion`` uses them by default.
PENALTY_LAST_N = 64  # reply tokens the repeat penalty looks back over
TOP_K = 40
MIN_P = 0.05
#: A prefix held by another slot is shared only when it is at least this much longer.
SHARE_MIN_TOKENS = 16
#: One cache pool for every sequence (True) or a stream per sequence (False, the default): in
#: one pool each token attends over every conversation's cells, so a step costs more with
#: every call up (bench/README.md).
UNIFIED_CACHE = False

Emit = Callable[[str, Any], None]


@attrs.define(eq=False)
class Request:
    """One generation: what to evaluate and where its results go (see LlamaModel.stream)."""

    prepare: Callable[[], tuple[list[int], list[str], int]]  # -> tokens, stop strings, max_tokens
    sampling: Any  # generation.Sampling
    stats: Any  # generation.Generation
    cancel: threading.Event
    emit: Emit
    submitted: float
    conversation: str = ""  # the call; "" for one-off requests
    alone: bool = True  # no other call is using the CPU (see BatchedDecoder._threads_for)
    started: float = 0.0
    pending: list[int] = attrs.field(factory=list)  # prompt tokens not evaluated yet
    stops: list[str] = attrs.field(factory=list)
    max_tokens: int = 0
    next_token: int = -1  # sampled, not yet fed to the model
    held: str = ""  # text that may be the start of a stop string
    sampler: Any = None
    decoder: Any = attrs.field(factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


@attrs.define(eq=False)
class Slot:
    seq: int
    tokens: list[int] = attrs.field(factory=list)  # what the cache holds for this sequence
    conversation: str = ""  # whose turns those are
    request: Request | None = None
    last_used: float = 0.0
    prefill: list[int] = attrs.field(factory=list)  # next_turn tokens still to evaluate, idle


class BatchedDecoder:
    """The decoding loop over one context with ``n_seq`` sequences of ``n_ctx`` tokens each."""

    def __init__(self, llm: Any, *, n_seq: int, n_ctx: int, n_batch: int, n_threads: int,
                 n_threads_batch: int, name: str = "") -> None:
        from llama_cpp import llama_cpp as C

        self._C = C
        self.n_seq = n_seq
        self.n_batch = n_batch
        self._vocab = C.llama_model_get_vocab(llm.model)
        # The Llama object's own settings (flash attention, cache types, RoPE), so a reply is
        # computed as llama-cpp-python computes it; only the size and the sequences differ.
        params = C.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * n_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.kv_unified = UNIFIED_CACHE
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = True
        self.n_threads, self.n_threads_batch = n_threads, n_threads_batch
        #: Tokens between a reply and the next user message, evaluated after each reply.
        self.next_turn: list[int] = []
        self._batch_threads = n_threads_batch  # what the context uses for batches now
        self._ctx = C.llama_init_from_model(llm.model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_seq} x {n_ctx} tokens")
        self._mem = C.llama_get_memory(self._ctx)
        self._batch = C.llama_batch_init(n_batch, 0, 1)
        self._slots = [Slot(i) for i in range(n_seq)]
        self._waiting: collections.deque[Request] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        #: Conversations whose cached history another conversation's turn took over.
        self.evictions = 0
        self._eviction_log = LogThrottle(burst=1, interval=60.0)
        self._thread = threading.Thread(target=self._run, name=f"llama-batch-{name}", daemon=True)
        self._thread.start()

    # -- called from other threads ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._wake:
            self._waiting.append(request)
            self._wake.notify()

    def close(self) -> None:
        """Stop the loop (requests in flight end as cancelled) and free the context."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        self._C.llama_batch_free(self._batch)
        self._C.llama_free(self._ctx)

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while (not self._closed and not self._waiting and not self._active()
                       and not self._prefilling()):
                    self._wake.wait()
                if self._closed:
                    break
                arrived = self._arrived()
            # Templates and tokenising run here, outside the lock submit() takes on the loop.
            for request in arrived:
                if self._prepared(request):
                    self._admit(self._choose(request), request)
            if self._active() or self._prefilling():
                self._step()
        for slot in self._active():
            self._finish(slot, "cancelled")
        for request in self._waiting:
            request.stats.cancelled = True
            request.emit("end", None)

    def _active(self) -> list[Slot]:
        return [s for s in self._slots if s.request is not None]

    def _prefilling(self) -> list[Slot]:
        return [s for s in self._slots if s.request is None and s.prefill]

    def _arrived(self) -> list[Request]:
        """As many waiting requests as there are idle slots, in arrival order (under the lock)."""
        idle = sum(s.request is None for s in self._slots)
        return [self._waiting.popleft() for _ in range(min(idle, len(self._waiting)))]

    def _prepared(self, request: Request) -> bool:
        """Render and tokenise the prompt; a failure goes to the consumer, never lost here."""
        request.started = time.monotonic()
        try:
            request.pending, request.stops, request.max_tokens = request.prepare()
        except Exception as e:
            request.emit("error", e)
            return False
        return True

    def _choose(self, request: Request) -> Slot:
        """The idle slot that served this conversation, else one that loses nothing (all it
        holds is a prefix of the prompt: an empty one), else the least recently used."""
        idle = [s for s in self._slots if s.request is None]
        if request.conversation:
            own = [s for s in idle if s.conversation == request.conversation]
            if own:
                return own[0]
        held = {id(s): common_prefix(s.tokens, request.pending) for s in idle}
        lossless = [s for s in idle if held[id(s)] == len(s.tokens)]
        if lossless:
            return max(lossless, key=lambda s: held[id(s)])
        slot = min(idle, key=lambda s: s.last_used)
        if slot.conversation and request.conversation:
            self._evicted(slot.conversation)
        return slot

    def _evicted(self, conversation: str) -> None:
        """More conversations than sequences: one loses its cached history, and its next turn
        evaluates all of it again (seconds on a small CPU). Counted, and said."""
        self.evictions += 1
        self._eviction_log.log(
            log, logging.WARNING,
            "more conversations than the %d kept in the cache (parallel): conversation %s's "
            "history was evicted and its next turn evaluates it again; raise parallel to the "
            "number of simultaneous calls", self.n_seq, conversation)

    def _admit(self, slot: Slot, request: Request) -> None:
        tokens = request.pending
        slot.request, slot.prefill = request, []
        C, stats = self._C, request.stats
        stats.queued = request.started - request.submitted
        slot.conversation = request.conversation
        if request.cancel.is_set():
            self._finish(slot, "cancelled")
            return
        common = common_prefix(slot.tokens, tokens)
        shared, donor = max((common_prefix(s.tokens, tokens), s.seq) for s in self._slots)
        if donor != slot.seq and shared >= common + SHARE_MIN_TOKENS:
            # Each sequence has a cache stream of its own, and llama.cpp copies only whole
            # streams between them: the donor's is copied (before the next decode) and what
            # follows the shared prefix is removed below.
            C.llama_memory_seq_cp(self._mem, donor, slot.seq, -1, -1)
            slot.tokens, common = tokens[:shared], shared
        common = min(common, len(tokens) - 1)  # the last prompt token is evaluated for its logits
        C.llama_memory_seq_rm(self._mem, slot.seq, common, -1)
        del slot.tokens[common:]
        stats.prompt_tokens, stats.cached_tokens = len(tokens), common
        request.pending = tokens[common:]
        request.sampler = self._sampler(request.sampling)

    def _sampler(self, sampling: Any) -> Any:
        """The chain llama-cpp-python's ``create_completion`` builds for the same settings (the
        repeat penalty looks at the reply's tokens only), so both paths answer alike."""
        C = self._C
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        steps = [C.llama_sampler_init_penalties(C.llama_vocab_n_tokens(self._vocab),
                                                PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0)]
        if sampling.temperature <= 0:
            steps.append(C.llama_sampler_init_greedy())
        else:
            seed = C.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
            steps += [C.llama_sampler_init_top_k(TOP_K), C.llama_sampler_init_top_p(sampling.top_p, 1),
                      C.llama_sampler_init_min_p(MIN_P, 1), C.llama_sampler_init_temp(sampling.temperature),
                      C.llama_sampler_init_dist(seed)]
        for step in steps:
            C.llama_sampler_chain_add(chain, step)
        return chain

    def _step(self) -> None:
        """One batch: every generating slot's next token, then prompt chunks in the room left."""
        now = time.monotonic()
        fed: list[tuple[Slot, list[int], int]] = []  # slot, tokens added, logits index or -1
        n = 0
        for slot in self._active():
            request = slot.request
            assert request is not None
            limit = request.sampling.time_limit
            if request.cancel.is_set():
                self._finish(slot, "cancelled")
            elif limit is not None and now - request.started > limit:
                self._finish(slot, "time_limit")
            elif not request.pending:
                self._add(slot, [request.next_token], n, logits=True)
                fed.append((slot, [request.next_token], n))
                n += 1
        for slot in self._active():
            request = slot.request
            assert request is not None
            if request.pending and n < self.n_batch:
                chunk = request.pending[: self.n_batch - n]
                last = len(chunk) == len(request.pending)
                self._add(slot, chunk, n, logits=last)
                fed.append((slot, chunk, n + len(chunk) - 1 if last else -1))
                n += len(chunk)
        for slot in self._prefilling():
            if n < self.n_batch:
                chunk = slot.prefill[: self.n_batch - n]
                self._add(slot, chunk, n, logits=False)
                fed.append((slot, chunk, -1))
                n += len(chunk)
        if not n:
            return
        self._batch.n_tokens = n
        self._use_batch_threads(self._threads_for(fed))
        status = self._C.llama_decode(self._ctx, self._batch)
        if status != 0:
            self._failed(fed, status)
            return
        for slot, tokens, index in fed:
            self._after_decode(slot, tokens, index)

    def _threads_for(self, fed: list[tuple[Slot, list[int], int]]) -> int:
        """``n_threads_batch`` for a lone prompt of a call with the CPU to itself, else
        ``n_threads``: llama.cpp's threads spin at every layer waiting for each other, and
        one the OS gave to another call's STT or TTS stalls the rest (bench/README.md)."""
        if len(fed) == 1:
            slot, tokens, _ = fed[0]
            if len(tokens) > 1 and slot.request is not None and slot.request.alone:
                return self.n_threads_batch
        return self.n_threads

    def _use_batch_threads(self, n: int) -> None:
        if n != self._batch_threads:
            self._C.llama_set_n_threads(self._ctx, self.n_threads, n)
            self._batch_threads = n

    def _add(self, slot: Slot, tokens: list[int], at: int, *, logits: bool) -> None:
        b, pos = self._batch, len(slot.tokens)
        for i, token in enumerate(tokens):
            j = at + i
            b.token[j], b.pos[j], b.n_seq_id[j] = token, pos + i, 1
            b.seq_id[j][0] = slot.seq
            b.logits[j] = 1 if logits and i == len(tokens) - 1 else 0

    def _after_decode(self, slot: Slot, tokens: list[int], index: int) -> None:
        request = slot.request
        slot.tokens.extend(tokens)
        if request is None:  # a prefill
            del slot.prefill[: len(tokens)]
            return
        if request.pending:
            del request.pending[: len(tokens)]
        if index < 0:
            return
        token = self._C.llama_sampler_sample(request.sampler, self._ctx, index)
        if self._C.llama_vocab_is_eog(self._vocab, token):
            # The whole reply is cached: the call's next prompt goes on with these tokens.
            # Queued before the reply ends, so whoever sees it end sees them queued.
            if request.conversation:
                slot.prefill = list(self.next_turn)
            self._finish(slot, "stop")
            return
        stats = request.stats
        if not stats.completion_tokens:
            stats.prompt_seconds = time.monotonic() - request.started
        stats.completion_tokens += 1
        request.next_token = token
        if self._text(request, request.decoder.decode(self._piece(token))):
            self._finish(slot, "stop")
        elif stats.completion_tokens >= request.max_tokens:
            self._finish(slot, "length")

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    def _text(self, request: Request, text: str) -> bool:
        """Emit ``text`` up to a stop string (True when one is found); hold back what may be the
        start of one."""
        held = request.held + text
        for stop in request.stops:
            at = held.find(stop)
            if at >= 0:
                request.held = ""
                if at:
                    request.emit("text", held[:at])
                return True
        keep = max((partial_suffix(held, stop) for stop in request.stops), default=0)
        ready, request.held = held[: len(held) - keep], held[len(held) - keep :]
        if ready:
            request.emit("text", ready)
        return False

    def _finish(self, slot: Slot, reason: str) -> None:
        request = slot.request
        assert request is not None
        tail = request.held + request.decoder.decode(b"", final=True)
        if tail and reason != "cancelled":
            request.emit("text", tail)
        stats = request.stats
        stats.finish_reason = reason
        stats.cancelled = reason == "cancelled"
        stats.seconds = time.monotonic() - request.started
        if request.sampler is not None:
            self._C.llama_sampler_free(request.sampler)
        slot.request, slot.last_used = None, time.monotonic()
        request.emit("end", None)

    def _failed(self, fed: list[tuple[Slot, list[int], int]], status: int) -> None:
        """llama_decode failed: the slots in the batch lose their cache and their requests."""
        error = RuntimeError(f"llama_decode failed ({status})")
        for slot, _, _ in fed:
            self._C.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
            slot.tokens, slot.prefill = [], []
            request = slot.request
            if request is None:
                continue
            if request.sampler is not None:
                self._C.llama_sampler_free(request.sampler)
            slot.request, slot.last_used = None, time.monotonic()
            request.emit("error", error)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
