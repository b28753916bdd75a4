"""Image embedding in shards, each cached in the store on its own, so a killed job resumes where it stopped.

The rows with an image are cut into shards of :data:`SHARD_IMAGES` images in row order. A shard's key hashes what
decides its numbers (the model and its versions, image size, batch size, the image sets' fingerprints and the
shard's own (split, image id) list), so a shard is reused by any run that meets the same images in the same
place, and a killed run recomputes only the shards that were not yet written (each is written atomically).
A shard is a work unit of :mod:`mmstack.parallel`: shards run in this process, or as Ray tasks that write into
the same store on a shared folder; the block then reads every shard back the same way.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.images import DEFAULT_LIMITS
from ..store import atomic_path, make_key

log = logging.getLogger(__name__)

SHARD_IMAGES = 2048
SHARD_KIND = "image_embed.shards"
# called with the shard's index after it is written (tests use it to stop a job part way)
AFTER_SHARD: list[Callable[[int], None]] = []
_ENCODERS: dict[int, object] = {}


@dataclass(frozen=True)
class Shard:
    """One shard's work: its index, where its result goes, and the (split, image id) of each of its rows."""

    index: int
    path: str
    refs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ShardSettings:
    image_size: int
    batch_size: int
    top_k: int
    num_threads: int  # torch threads, or ONNX Runtime workers (one thread each)
    engine: str = "torch"  # or "onnx" (mmstack.features.image_onnx): the same features within 1e-4, faster on CPU


def plan(refs: list[tuple[str, str]], wanted: list[int], settings: ShardSettings, identity: dict,
         images_fingerprint: dict, store) -> list[Shard]:
    """The shards of the ``wanted`` rows (positions in ``refs``), with their store paths."""
    shards = []
    engine = ()  # torch shards keep the keys they had before there were engines
    if settings.engine != "torch":
        from .image_onnx import engine_identity

        engine = (engine_identity(),)
    for index, start in enumerate(range(0, len(wanted), SHARD_IMAGES)):
        shard_refs = tuple(refs[i] for i in wanted[start:start + SHARD_IMAGES])
        key = make_key("image_embed_shard", settings.image_size, settings.batch_size, settings.top_k, identity,
                       images_fingerprint, shard_refs, *engine)
        shards.append(Shard(index, str(store.path("features", SHARD_KIND, key, ".npz")), shard_refs))
    return shards


def encoder_for(settings: ShardSettings):
    """The encoder of ``settings`` (one per process, size and engine: a Ray worker reuses it across shards)."""
    from .image_embed import EfficientNetLite0Encoder

    key = (settings.image_size, settings.engine, settings.num_threads if settings.engine == "onnx" else None)
    if key not in _ENCODERS:
        if settings.engine == "onnx":
            from .image_onnx import OnnxImageEncoder

            _ENCODERS[key] = OnnxImageEncoder(EfficientNetLite0Encoder(settings.image_size, device="cpu"),
                                              workers=settings.num_threads or os.cpu_count() or 1)
        else:
            _ENCODERS[key] = EfficientNetLite0Encoder(settings.image_size)
    return _ENCODERS[key]


def _encode_torch(encoder, batches: list, settings: ShardSettings, decode) -> list:
    import torch

    from ..threads import torch_threads

    out = []
    with torch_threads(settings.num_threads), torch.inference_mode():
        for batch in batches:
            got, imgs, rejected = decode(batch)
            out.append((got, rejected, *(encoder.encode(imgs, batch_size=len(imgs)) if imgs else (None, None))))
    return out


def _encode_onnx(encoder, batches: list, settings: ShardSettings, decode) -> list:
    from .image_onnx import in_workers

    def work(batch):
        got, imgs, rejected = decode(batch)
        return (got, rejected, *(encoder.run(encoder.torch_encoder.preprocess(imgs)) if imgs else (None, None)))

    return in_workers(work, batches, encoder.workers)


def embed_shard(images: dict, settings: ShardSettings, shard: Shard) -> int:
    """Compute and store one shard unless it is stored already; returns its index. Module-level and
    picklable, so it runs as a Ray task as well."""
    path = Path(shard.path)
    if path.is_file():
        return shard.index
    import torch

    from .image_embed import decode_batch

    encoder = encoder_for(settings)
    n, k = len(shard.refs), settings.top_k
    pooled = np.zeros((n, 1280), dtype=np.float16)
    present = np.zeros(n, dtype=bool)
    top_prob = np.full((n, k), np.nan, dtype=np.float32)
    top_class = np.full((n, k), -1, dtype=np.int32)
    entropy = np.full(n, np.nan, dtype=np.float32)
    # problems are counted into the shard (a Ray worker's counters never reach the driver); the sources' own
    # counters are restored so that a local run does not count them twice
    saved = {split: Counter(source.problems) for split, source in images.items()}
    problems: dict[str, Counter] = {split: Counter() for split in images}
    limits = next(iter(images.values())).limits if images else DEFAULT_LIMITS

    def decode(batch: range):
        payloads = []
        for i in batch:
            split, image_id = shard.refs[i]
            source = images.get(split)
            payloads.append((i, source.read_bytes(image_id) if source is not None else None))
        return decode_batch(payloads, settings.image_size, limits)

    batches = [range(start, min(n, start + settings.batch_size)) for start in range(0, n, settings.batch_size)]
    encode = _encode_onnx if settings.engine == "onnx" else _encode_torch
    try:
        for got, rejected, feats, logits in encode(encoder, batches, settings, decode):
            for i, reason in rejected:
                problems[shard.refs[i][0]][reason] += 1
            if feats is None:
                continue
            pooled[got] = feats
            present[got] = True
            probs = torch.softmax(torch.from_numpy(logits).double(), dim=1)
            entropy[got] = (-(probs * probs.clamp_min(1e-12).log()).sum(1)).numpy()
            if k:
                values, idx = probs.topk(k, dim=1)
                top_prob[got], top_class[got] = values.numpy(), idx.numpy()
        for split, source in images.items():
            problems[split] += source.problems - saved[split]
    finally:
        for split, source in images.items():
            source.problems = saved[split]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, pooled=pooled, present=present, top_prob=top_prob, top_class=top_class, entropy=entropy,
                     problems=np.array(json.dumps({s: dict(c) for s, c in problems.items()})))
    log.debug("image_embed: shard %d written (%d images)", shard.index, n)
    for hook in AFTER_SHARD:
        hook(shard.index)
    return shard.index


def load_shard(shard: Shard) -> dict[str, np.ndarray]:
    with np.load(shard.path) as stored:
        return {name: stored[name] for name in stored.files}
