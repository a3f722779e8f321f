"""Piper voices decoded in parts: a piece's first audio before the whole piece is decoded.

A Piper voice is a VITS model. Its front (text encoder, duration predictor, flow) turns a
sentence's phonemes into latent frames, one per ``hop`` samples of audio; its decoder (a HiFi-GAN
generator) turns those frames into audio and is most of the cost (joe-medium, one thread: 93 of
137 ms for "The capital of France is"). The decoder is a stack of convolutions, so a sample
depends only on the frames near it: decoding frames [a, b) with ``CONTEXT_FRAMES`` more on each
side and keeping the middle gives the samples that decoding the whole sentence gives. A piece
the caller is waiting for can then be decoded first for its first fraction of a second, and the
rest while that plays.

The voice file holds both parts as one ONNX graph. :func:`cut_model` cuts it where the decoder
begins (with the ``onnx`` package), :func:`prepare_parts` checks the parts against the whole
model on a probe and keeps them in vc's cache directory, once per voice file; later starts load
them like any model (:func:`load_parts`). ``python -m vc_tts_piper.voice_parts MODEL.onnx``
prepares them in a separate process (what a start does in the background when they are missing:
the cut holds Python's GIL for long stretches, which a live call's audio must never wait for).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vc.providers import cache_dir
from vc_tts_piper.voice_cache import drop_replaced, file_digest

log = logging.getLogger("vc.tts.piper")

#: Where piper's exports begin the decoder: its first convolution (``dec`` in VITS's modules).
DECODER_ENTRY = "/dec/conv_pre/Conv"
#: The convolution through which a multi-speaker decoder reads its speaker vector.
DECODER_CONDITION = "/dec/cond/Conv"
#: Frames decoded on each side of a span and dropped. joe-medium, a span decoded with 4, 8 and
#: 16 frames either side against the whole sentence: 31, 70 and 130 dB signal to difference.
CONTEXT_FRAMES = 16
#: The largest difference (full scale 1.0) the probe allows between parts and whole model.
PROBE_TOLERANCE = 1e-3
#: How much longer than the recent pace a piece's first part must play to cover its rest.
PACE_MARGIN = 2.0
#: Bumped when the layout of the parts' folder changes (older folders are then cut again).
#: 2: each part's weights in a file of their own next to its graph (``<part>.onnx.weights``):
#: onnxruntime then creates joe-medium's front session with 0.08-0.15 CPU-s instead of
#: 0.29-0.42 (fresh processes, 5 each), most of a protobuf parse of 56 MB saved.
LAYOUT = 2
FRONT_FILE, DECODER_FILE, META_FILE = "front.onnx", "decoder.onnx", "parts.json"
WEIGHTS_SUFFIX = ".weights"


class SplitError(Exception):
    """The voice's graph is not one vc knows how to cut; the voice is then decoded whole."""


@attrs.frozen
class Cut:
    """A voice's graph in two serialised ONNX models, and the tensors between them."""

    front: bytes
    decoder: bytes
    #: The decoder's frame input, shaped (batch, channels, frames).
    frames: str
    #: The decoder's other inputs (a speaker vector), passed whole with every span.
    conditions: tuple[str, ...]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise SplitError("the onnx package is not installed (pip install "
                         "'vc-tts-piper[local]')") from e
    return onnx


def _upstream(graph: Any, outputs: list[str], stop: set[str]) -> list[Any]:
    """The nodes ``outputs`` are computed from, not looking past the tensors in ``stop``;
    in the graph's (topological) order."""
    producer = {out: node for node in graph.node for out in node.output}
    needed: set[int] = set()
    pending = [t for t in outputs if t not in stop]
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        pending += [t for t in node.input if t and t not in stop]
    return [node for node in graph.node if id(node) in needed]


def _model(onnx: Any, source: Any, nodes: list[Any], inputs: list[str],
           outputs: list[str]) -> bytes:
    graph = source.graph
    used = {t for node in nodes for t in node.input}
    declared = {i.name: i for i in graph.input}
    results = {o.name: o for o in graph.output}
    float_tensor = onnx.TensorProto.FLOAT
    sub = onnx.helper.make_graph(
        nodes, graph.name,
        [declared.get(t) or onnx.helper.make_tensor_value_info(t, float_tensor, None)
         for t in inputs],
        [results.get(t) or onnx.helper.make_tensor_value_info(t, float_tensor, None)
         for t in outputs],
        [init for init in graph.initializer if init.name in used])
    model = onnx.helper.make_model(sub, opset_imports=source.opset_import,
                                   ir_version=source.ir_version)
    model.functions.extend(source.functions)
    return bytes(model.SerializeToString())


def cut_model(path: Path) -> Cut:
    """Cut voice model ``path`` where its decoder begins; SplitError if it has no such place or
    the decoder reads anything from the front but its frames and a speaker vector."""
    onnx = _onnx()
    source = onnx.load(str(path))
    graph = source.graph
    entry = next((n for n in graph.node if n.name == DECODER_ENTRY), None)
    if entry is None:
        raise SplitError(f"no node {DECODER_ENTRY} (not a VITS graph as piper exports it)")
    audio = graph.output[0].name
    frames = entry.input[0]
    decoder = _upstream(graph, [audio], {frames})
    made = {t for node in decoder for t in node.output}
    weights = {init.name for init in graph.initializer}
    boundary = sorted({t for node in decoder for t in node.input
                       if t and t not in made and t not in weights} - {frames})
    readers = {t: {n.name for n in decoder if t in n.input} for t in boundary}
    odd = [t for t in boundary if readers[t] != {DECODER_CONDITION}]
    if odd:
        raise SplitError(f"the decoder also reads {', '.join(odd)} from the front")
    if {i.name for i in graph.input} & set(boundary):
        raise SplitError("the decoder reads a model input directly")
    front = _upstream(graph, [frames, *boundary], set())
    front_inputs = [i.name for i in graph.input if any(i.name in n.input for n in front)]
    return Cut(
        front=_model(onnx, source, front, front_inputs, [frames, *boundary]),
        decoder=_model(onnx, source, decoder, [frames, *boundary], [audio]),
        frames=frames, conditions=tuple(boundary))


@attrs.frozen
class Latent:
    """One sentence from the front: its frames and the decoder's other inputs."""

    frames: np.ndarray
    conditions: dict[str, np.ndarray]

    @property
    def length(self) -> int:
        return int(self.frames.shape[-1])


class VoiceParts:
    """A voice's front and decoder sessions: phoneme ids -> latent frames -> audio spans."""

    def __init__(self, front: Any, decoder: Any, frames: str, conditions: tuple[str, ...],
                 hop: int) -> None:
        self.front = front
        self.decoder = decoder
        self._frames = frames
        self._conditions = conditions
        #: Audio samples per latent frame.
        self.hop = hop

    def latent(self, feed: dict[str, np.ndarray]) -> Latent:
        """Run the front on the model's inputs (``input``, ``input_lengths``, ``scales``...)."""
        wanted = [self._frames, *self._conditions]
        out = self.front.run(wanted, {k: v for k, v in feed.items() if k in self._front_inputs})
        return Latent(out[0], dict(zip(self._conditions, out[1:], strict=True)))

    @property
    def _front_inputs(self) -> set[str]:
        return {i.name for i in self.front.get_inputs()}

    def decode(self, latent: Latent, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Float audio of frames [start, stop) (default: to the end)."""
        stop = latent.length if stop is None else min(stop, latent.length)
        lo, hi = max(0, start - CONTEXT_FRAMES), min(latent.length, stop + CONTEXT_FRAMES)
        feed = {self._frames: latent.frames[:, :, lo:hi], **latent.conditions}
        audio = np.asarray(self.decoder.run(None, feed)[0]).reshape(-1)
        return audio[(start - lo) * self.hop:(stop - lo) * self.hop]


class RestPace:
    """How fast the rest of a piece has been coming on this machine, now: wall seconds per
    decoded frame from the moment a piece's first part was ready to the moment its rest was
    (decoding, waiting for a thread and for the CPU included), the slowest of the last
    ``window`` pieces. Under load the rest of a piece comes much slower than on an idle core
    (joe-medium: 0.7 ms a frame idle; several ms with four conversations on 2 cores), and a
    first part shorter than the rest takes to come leaves the caller in a gap mid-word."""

    def __init__(self, initial: float, window: int = 8) -> None:
        self._initial = initial
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def record(self, seconds: float, frames: int) -> None:
        if frames > 0 and seconds >= 0:
            self._recent.append(seconds / frames)

    @property
    def per_frame(self) -> float:
        return max(self._recent, default=self._initial)


def first_frames(length: int, later: int, least: int, pace: float, frame_s: float) -> int:
    """How many of a sentence's ``length`` frames to decode first: at least ``least``, and
    enough that their playout (``frame_s`` each) covers the rest's decoding, ``later`` frames
    of further sentences included, at ``pace`` seconds a frame with a margin of
    ``PACE_MARGIN``: ``f * frame_s >= m * pace * (length - f + CONTEXT_FRAMES + later)``."""
    k = PACE_MARGIN * pace
    needed = math.ceil(k * (length + CONTEXT_FRAMES + later) / (frame_s + k)) if k > 0 else 0
    return max(least, needed)


def parts_dir(model: Path) -> Path:
    """Where the parts of voice file ``model`` are kept: named after the file and what it is
    (path, size, modification time), so a changed or reinstalled voice is cut again."""
    return cache_dir() / "piper-parts" / f"{model.stem}-{file_digest(model, LAYOUT)}"


def load_parts(model: Path, session: Any) -> VoiceParts | None:
    """The parts kept for ``model``, as sessions made by ``session(path)``; None when there
    are none. SplitError when they are there but unreadable."""
    folder = parts_dir(model)
    if not (folder / META_FILE).exists():
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return VoiceParts(session(folder / FRONT_FILE), session(folder / DECODER_FILE),
                          str(meta["frames"]), tuple(meta["conditions"]), int(meta["hop"]))
    except Exception as e:  # a damaged cache must only cost the faster first audio
        raise SplitError(f"the parts in {folder} are unreadable: {e}") from e


def _probe_feed(config: dict[str, Any], inputs: set[str]) -> dict[str, np.ndarray]:
    """Model inputs for a probe sentence made of the voice's own phoneme ids, noise off."""
    ids = sorted({i for v in config.get("phoneme_id_map", {}).values() for i in v})[1:41]
    ids = ids or list(range(1, 41))
    feed: dict[str, np.ndarray] = {"input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)}
    if "sid" in inputs:
        feed["sid"] = np.array([0], dtype=np.int64)
    return feed


def _keep(onnx: Any, part: bytes, path: Path) -> None:
    """Write ``part`` to ``path``, its weights to a file of their own next to it."""
    model = onnx.load_from_string(part)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + WEIGHTS_SUFFIX, size_threshold=1024)


def _check(model: Path, cut: Cut, folder: Path) -> int:
    """Decode a probe whole and in two spans through the parts kept in ``folder``; the hop
    (samples per frame)."""
    import onnxruntime as ort

    def session(source: Path) -> Any:
        return ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])

    whole = session(model)
    config = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))
    feed = _probe_feed(config, {i.name for i in whole.get_inputs()})
    expected = np.asarray(whole.run(None, feed)[0]).reshape(-1)
    parts = VoiceParts(session(folder / FRONT_FILE), session(folder / DECODER_FILE),
                       cut.frames, cut.conditions, 1)
    latent = parts.latent(feed)
    parts.hop = len(expected) // max(1, latent.length)
    if parts.hop * latent.length != len(expected) or latent.length < 2:
        raise SplitError(f"{len(expected)} samples from {latent.length} frames")
    middle = latent.length // 2
    got = np.concatenate([parts.decode(latent, 0, middle), parts.decode(latent, middle)])
    worst = float(np.max(np.abs(got - expected)))
    if worst > PROBE_TOLERANCE:
        raise SplitError(f"decoding in parts differs from the whole model by {worst:.4f}")
    return parts.hop


def prepare_parts(model: Path) -> Path:
    """Cut ``model``, check the parts against it, keep them (once: a folder already there is
    returned as it is). Parts kept for an older state of the same file are removed."""
    folder = parts_dir(model)
    if (folder / META_FILE).exists():
        return folder
    cut = cut_model(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model.stem}-", dir=folder.parent))
    try:
        _keep(_onnx(), cut.front, work / FRONT_FILE)
        _keep(_onnx(), cut.decoder, work / DECODER_FILE)
        hop = _check(model, cut, work)
        meta = {"frames": cut.frames, "conditions": list(cut.conditions), "hop": hop,
                "source": str(model.resolve())}
        (work / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(work, folder)
        drop_replaced(folder, model, META_FILE)
    except OSError as e:  # (also: another process kept its parts first)
        if not (folder / META_FILE).exists():
            raise SplitError(f"could not keep the parts in {folder}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


async def prepare_elsewhere(model: Path) -> str:
    """Run :func:`prepare_parts` for ``model`` in a separate low-priority process; "" when
    the parts are ready, else why not. The process is killed if this is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vc_tts_piper.voice_parts", str(model),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode == 0:
        return ""
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def main(argv: list[str] | None = None) -> None:
    """``python -m vc_tts_piper.voice_parts MODEL.onnx``: prepare its parts (at low priority)."""
    parser = argparse.ArgumentParser(prog="python -m vc_tts_piper.voice_parts")
    parser.add_argument("model", type=Path)
    args = parser.parse_args(argv)
    os.nice(10)  # started next to live calls: never compete with them
    try:
        print(prepare_parts(args.model))
    except (SplitError, OSError) as e:
        print(f"{args.model}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
