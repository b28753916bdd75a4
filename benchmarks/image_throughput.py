"""Images per second at 224 px end to end (read from a zip, decode, resize, EfficientNet-Lite0), on the CPU here.

    python benchmarks/image_throughput.py [--images 1000] [--threads 2] [--record]

Listing-sized photos (640 x 480 JPEGs, as the real Avito images) are drawn once into a zip. Measured: decoding
and resizing alone with and without JPEG draft mode; the whole path with torch (the image_embed block's shard
code) and with ONNX Runtime (the same network exported; its features are checked against torch); and the
extrapolation to the competition's ~2M images.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

FULL_IMAGES = 2_011_862
SIZE = 224


def make_zip(path: Path, n: int) -> None:
    if path.exists():
        return
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(0, 255, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(12):
                x, y = rng.integers(0, 600, 2)
                draw.ellipse([x, y, x + rng.integers(20, 200), y + rng.integers(20, 200)],
                             fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            noise = rng.integers(0, 24, (480, 640, 3), dtype=np.uint8)
            img = Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            zf.writestr(f"train_jpg/{i:07d}.jpg", buf.getvalue())


def main() -> None:
    from mmstack.data.images import ImageSource, decode_image
    from mmstack.features.image_shards import Shard, ShardSettings, embed_shard, encoder_for

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--onnx-batch", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmstack-imgbench"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # other work on the cores slows every row
    zpath = args.work / f"train_jpg-{args.images}.zip"
    make_zip(zpath, args.images)
    source = ImageSource(zpath)
    ids = source.ids()
    rows = []

    for draft in (None, SIZE):
        start = time.perf_counter()
        for image_id in ids:
            decoded, _ = decode_image(source.read_bytes(image_id), source.limits, draft=draft)
            decoded.image.convert("RGB").resize((SIZE, SIZE))
        rate = len(ids) / (time.perf_counter() - start)
        rows.append((f"read + decode + resize, draft {'on' if draft else 'off'}", rate))
        print(rows[-1], flush=True)

    def shard_rate(settings: ShardSettings) -> float:
        for run in range(2):  # the first run includes loading (and for ONNX exporting) the model
            shard = Shard(0, str(args.work / f"shard-{settings.engine}-{run}.npz"), tuple(("train", i) for i in ids))
            Path(shard.path).unlink(missing_ok=True)
            start = time.perf_counter()
            embed_shard({"train": source}, settings, shard)
            rate = len(ids) / (time.perf_counter() - start)
        return rate

    rate = shard_rate(ShardSettings(SIZE, args.batch, 3, args.threads))
    rows.append((f"torch end to end ({args.threads} threads, batch {args.batch})", rate))
    print(rows[-1], flush=True)
    onnx = ShardSettings(SIZE, args.onnx_batch, 3, args.threads, "onnx")
    rate = shard_rate(onnx)
    diff = encoder_for(onnx).max_difference
    rows.append((f"ONNX Runtime end to end ({args.threads} one-thread workers, batch {args.onnx_batch}; "
                 f"engine = \"onnx\"); max abs diff to torch {diff:.1e}", rate))
    print(rows[-1], flush=True)

    lines = ["| path | images/s | 2M images (h) |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:.1f} | {FULL_IMAGES / rate / 3600:.1f} |" for name, rate in rows]
    body = (f"## Image throughput at 224 px\n\n`python benchmarks/image_throughput.py --images {args.images} "
            f"--threads {args.threads}`: {args.images} drawn 640x480 JPEGs read straight from a zip, CPU here. "
            "The 2M-image column is one machine like this one, one image path after another. Both end-to-end rows "
            "are the image_embed block's shard code (`embed_shard`), reading from the zip. Load average when it "
            f"started: {load:.1f}.\n\n" + "\n".join(lines))
    publish("image_throughput", body, record=args.record)


if __name__ == "__main__":
    main()
