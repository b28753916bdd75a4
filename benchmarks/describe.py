"""The listing description service: one-or-many accuracy, caption metrics (embedded listings and Flickr8k) beside a
"copy the nearest training caption" baseline, seconds per listing, and the web app under load.

    python benchmarks/describe.py [--models mmstack/describe/models] [--test-rows 400] [--flickr ../shared/data/flickr8k]
                                  [--work /tmp/mmstack-bench/describe] [--load-seconds 40] [--no-load] [--no-record]

Honesty: the shipped models (``python -m mmstack.describe.train``: generator seed 0, 1,200 rows) never see the
held-out listings drawn here with another generator seed (1). Flickr8k: captioners fit on the training images'
captions and are scored on the test images' five captions each; skipped cleanly when the folder is absent.
The load test starts ``python -m mmstack serve`` (the README's command) on 127.0.0.1, runs 4 client threads for
``--load-seconds`` and stops; then it sends 10 photos of 25 MB each and reads the server's peak memory.
Features are cached in the work folder. Results go to BENCHMARKS.md (section "describe").
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC_COLUMNS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "use_cos")


def table(header: list[str], rows: list[list]) -> list[str]:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]]


def held_out(rows: int, work: Path, encoder):
    from mmstack.describe.listings import embedded_listings
    from mmstack.describe.train import encode_listings

    listings = embedded_listings(rows, seed=0, stream=1, lots=0.4)
    encs = encode_listings(listings, encoder, work / f"heldout_{rows}.npz")
    return listings, encs


def diversity_section(describer, listings, encs) -> tuple[list[str], float]:
    from mmstack.describe.diversity import VARIATIVE, regex_label
    from mmstack.describe.train import diversity_matrix, labels

    y = labels(listings)
    score = describer.diversity.score(diversity_matrix(listings, encs))
    pred = (score >= describer.diversity.threshold).astype(int)
    regex = np.array([regex_label(l.text) == VARIATIVE for l in listings], int)
    kinds = np.array([l.kind for l in listings])
    accuracy = float((pred == y).mean())
    rows = [[k, int((kinds == k).sum()), "<VARIATIVE>" if k in ("set", "lot") else "<SINGLE>",
             f"{(pred[kinds == k] == y[kinds == k]).mean():.3f}", f"{(regex[kinds == k] == y[kinds == k]).mean():.3f}"]
            for k in ("single", "identical", "set", "lot") if (kinds == k).any()]
    rows.append(["**all**", len(y), f"{y.sum()} variative", f"**{accuracy:.3f}**", f"{(regex == y).mean():.3f}"])
    lines = ["### One item or many (<SINGLE> / <VARIATIVE>)", "",
             f"Labelled set: {len(listings)} held-out listings of the embedded Avito generator (the shipped models' "
             "world, seed 0, another draw of listings: stream 1; `lots=0.4`: "
             "40% of the everyday-category listings drawn as multi-item ones, 1-3 photos each). Labels: the "
             "generator's truth for multi-item listings (many identical items = <SINGLE>, a set of one kind or "
             "a lot of different things = <VARIATIVE>); the text rule (`diversity.regex_label`) for every other "
             "listing. 30% of the multi-item listings carry no text cue at all: only the photos tell. "
             "Model: logistic regression on text cues and photo evidence (object regions, colour spread, photo "
             "differences), trained on the seed-0 listings (1,606, CV accuracy 0.988).", "",
             *table(["kind", "listings", "label", "accuracy (model)", "accuracy (text rule only)"], rows), ""]
    return lines, accuracy


def caption_rows(results: dict[str, dict]) -> list[list]:
    return [[name, *[r[c] for c in METRIC_COLUMNS], r.get("it_mean", ""), r.get("it_max", "")]
            for name, r in results.items()]


def image_text(describer, encs, hyps) -> tuple[float, float]:
    """Mean over listings of the per-listing mean and max image-text score of the description vs the photos."""
    vecs = describer.encoder.texts(list(hyps))
    means, maxes = [], []
    for enc, vec in zip(encs, vecs):
        if enc.n_photos and np.any(vec):
            s = describer.scorer.scores(enc, vec)["score"]
            means.append(float(np.mean(s)))
            maxes.append(float(np.max(s)))
    return float(np.mean(means)), float(np.mean(maxes))


def embedded_captions(describer, listings, encs, n: int, net) -> list[str]:
    from mmstack.describe.captioners import RetrievalCaptioner
    from mmstack.describe.masking import mask_attributes, restore
    from mmstack.describe.metrics import caption_metrics
    from mmstack.describe.pipeline import RETRIEVAL, listing_query

    retrieval = RetrievalCaptioner.load(describer.settings.models_dir / RETRIEVAL)
    rows = [i for i, l in enumerate(listings) if l.description][:n]
    refs = [[listings[i].description] for i in rows]
    queries, values = [], []
    for i in rows:
        masked = mask_attributes(listings[i].attributes)
        queries.append(listing_query(encs[i], masked.text, listings[i].variative))
        values.append(masked.values)
    hyps = {
        "copy nearest training caption (baseline)": [retrieval.copy_nearest(q) for q in queries],
        "retrieval-and-fill": [restore(retrieval.describe(q), v) for q, v in zip(queries, values)],
        "caption net": [restore(t, v) for t, v in zip(net.describe_many(queries), values)],
    }
    results = {}
    for name, h in hyps.items():
        results[name] = caption_metrics(h, refs, describer.encoder.text_encoder)
        results[name]["it_mean"], results[name]["it_max"] = image_text(describer, [encs[i] for i in rows], h)
    results["reference descriptions (upper line)"] = {**{c: "" for c in METRIC_COLUMNS}}
    results["reference descriptions (upper line)"]["it_mean"], results["reference descriptions (upper line)"][
        "it_max"] = image_text(describer, [encs[i] for i in rows], [r[0] for r in refs])
    example = {name: h[0] for name, h in hyps.items()}
    return ["### Descriptions of held-out embedded listings", "",
            f"{len(rows)} held-out listings with a description (one reference each). BLEU: sacrebleu corpus "
            "score (0..100, n-grams up to n); ROUGE-L F (rouge-score, Unicode words); CIDEr-D (pycocoevalcap); "
            "USE cosine to the reference; image-text: the category agreement (0..1) between the description's "
            "USE vector and each photo, mean and max over the listing's photos, averaged (the CLIPScore role).",
            "", *table(["captioner", *METRIC_COLUMNS, "image-text mean", "image-text max"], caption_rows(results)),
            "", "Example (first listing): " + "; ".join(f"**{k}**: {v[:160]!r}" for k, v in example.items()), ""]


def flickr_captions(data: Path, work: Path, describer, epochs: int) -> list[str]:
    import pandas as pd

    from mmstack.data.images import decode_image
    from mmstack.describe.captioners import CaptionQuery, NetCaptioner, RetrievalCaptioner
    from mmstack.describe.metrics import caption_metrics
    from mmstack.describe.validate import PHOTO_LIMITS

    if not (data / "train_dataset.csv").is_file():
        return ["### Flickr8k", "", f"Skipped: {data} not found.", ""]
    train = pd.read_csv(data / "train_dataset.csv")
    train["captioned"] = train["query_id"].str.split("#").str[0]
    train = train.drop_duplicates("query_id")
    train = train[train["captioned"].map(lambda n: (data / "train_images" / n).is_file())]
    test = pd.read_csv(data / "test_queries.csv", sep="|", index_col=0)
    train_images = sorted(train["captioned"].unique())
    test_images = sorted(test["image"].unique())
    cache = work / "flickr_features.npz"
    names = [f"train_images/{n}" for n in train_images] + [f"test_images/{n}" for n in test_images]
    if cache.is_file() and list(np.load(cache)["names"]) == names:
        with np.load(cache) as a:
            pooled, probs = a["pooled"], a["probs"].astype(np.float32)
    else:
        images = [decode_image((data / n).read_bytes(), PHOTO_LIMITS, draft=448, max_side=448, exif=True)[0].image
                  for n in names]
        pooled, probs, _, _ = describer.encoder.photos(images)
        np.savez_compressed(cache, names=np.array(names), pooled=pooled, probs=probs.astype(np.float16))
    index = {n: i for i, n in enumerate(names)}
    q_train = [CaptionQuery(image_vec=pooled[index[f"train_images/{n}"]]) for n in train["captioned"]]
    captions = [str(c).strip() for c in train["query_text"]]
    t0 = time.perf_counter()
    retrieval = RetrievalCaptioner.fit(q_train, captions, captions, same_kind_bonus=0.0)
    net = NetCaptioner.fit(q_train, captions, epochs=epochs, seed=0)
    fit_seconds = time.perf_counter() - t0
    q_test = [CaptionQuery(image_vec=pooled[index[f"test_images/{n}"]]) for n in test_images]
    refs = [[str(c).strip() for c in test.loc[test["image"] == n, "query_text"]] for n in test_images]
    hyps = {"copy nearest training caption (baseline)": [retrieval.copy_nearest(q) for q in q_test],
            "retrieval (consensus of 5 nearest)": [retrieval.describe(q) for q in q_test],
            "caption net": net.describe_many(q_test)}
    test_probs = probs[[index[f"test_images/{n}"] for n in test_images]]

    def zero_shot(texts):
        """Mean over test images of the zero-shot score of each image's caption against that image."""
        vecs = describer.scorer.zero_shot.text_vectors(texts)
        return float(np.mean(np.diag(describer.scorer.zero_shot.score_vectors(vecs, test_probs))))

    results = {}
    for name, h in hyps.items():
        results[name] = caption_metrics(h, refs, describer.encoder.text_encoder)
        results[name]["it_mean"] = zero_shot(h)
    results["a reference caption (first of five, vs all five)"] = caption_metrics(
        [r[0] for r in refs], refs, describer.encoder.text_encoder)
    results["a reference caption (first of five, vs all five)"]["it_mean"] = zero_shot([r[0] for r in refs])
    rows = [[name, *[r[c] for c in METRIC_COLUMNS], r["it_mean"]] for name, r in results.items()]
    return ["### Flickr8k captions (English, real photos)", "",
            f"Fit on {len(captions)} captions of {len(train_images)} training images (fit {fit_seconds:.0f} s), "
            f"scored on {len(test_images)} test images against their five captions each. Image features: "
            "EfficientNet-Lite0 at 224 px; no attributes. Image-text: the zero-shot score of "
            "`moderation_images.mismatch` (text vs the photo's ImageNet classes, in units of the text's spread; 0 = "
            "chance), the CLIPScore role. The reference line scores caption 1 against all five (it is one of "
            "them, so its n-gram figures are an upper bound, not a human agreement figure).", "",
            *table(["captioner", *METRIC_COLUMNS, "image-text (zero-shot)"], rows),
            "", "Example: " + "; ".join(f"**{k}**: {v[0]!r}" for k, v in hyps.items()), ""]


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def timing_section(describer, listings, n: int) -> list[str]:
    from mmstack.describe.validate import validate_listing

    chosen = [l for l in listings if l.photos][:n]
    seconds = {"validation": [], "moderation": [], "generation": [], "total": []}
    for l in chosen:
        t0 = time.perf_counter()
        listing = validate_listing(json.dumps(l.attributes, ensure_ascii=False),
                                   [(f"p{i}.png", png(p), None) for i, p in enumerate(l.photos)])
        out = describer.describe(listing, time.perf_counter() - t0)
        for k in seconds:
            seconds[k].append(out["seconds"][k])
    photos = statistics.mean(len(l.photos) for l in chosen)
    rows = [[k, f"{statistics.median(v):.3f}", f"{np.percentile(v, 90):.3f}"] for k, v in seconds.items()]
    return ["### Seconds per listing (in process)", "",
            f"{len(chosen)} held-out listings, {photos:.1f} photos each on average (PNG, 160 x 120), captioner "
            f"`{describer.captioner.name}`. Moderation includes the photo and text features it reads (EfficientNet, "
            "USE), NSFW, the minors filter with its face check, toxicity and the mismatch checks; generation is "
            "masking, one-or-many, best photo and the captioner.", "",
            *table(["step", "median s", "p90 s"], rows), ""]


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_jpeg(path: Path, target: int = 25 * 2**20 - 4096) -> Path:
    """A real JPEG just under 25 MB: noise at quality 100, grown until it is big enough."""
    from PIL import Image

    if path.is_file() and target - 2**20 < path.stat().st_size <= target:
        return path
    rng = np.random.default_rng(0)
    side = 2900
    while True:
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(data, "JPEG", quality=100)
        size = data.tell()
        if target - 2**20 < size <= target:
            path.write_bytes(data.getvalue())
            return path
        side = int(side * (target - 2**19) ** 0.5 / size ** 0.5)


def load_section(listings, work: Path, seconds: float, clients: int = 4) -> tuple[list[str], dict]:
    import socket
    import urllib.request

    from mmstack.describe.client import post_listing

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "mmstack", "serve", "--port", str(port)]
    log = open(work / "serve.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"mmstack serve did not start; see {work / 'serve.log'}")
                time.sleep(0.5)
        start_seconds = time.perf_counter() - t0
        bodies = [(l.attributes, [(f"p{i}.png", png(p)) for i, p in enumerate(l.photos)]) for l in listings]
        lock = threading.Lock()
        done, failed, latencies = [0], [], []
        stop_at = time.perf_counter() + seconds

        def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                attrs, photos = bodies[i % len(bodies)]
                t = time.perf_counter()
                try:
                    status, body = post_listing(url + "/describe", attrs, photos, timeout=120)
                except OSError as exc:
                    status, body = -1, {"error": str(exc)}
                with lock:
                    if status == 200:
                        done[0] += 1
                        latencies.append(time.perf_counter() - t)
                    else:
                        failed.append((status, str(body)[:200]))
                i += clients

        began = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        rps = done[0] / elapsed
        before = rss_peak_mb(proc.pid)
        big = big_jpeg(work / "big_25mb.jpg")
        t = time.perf_counter()
        status, body = post_listing(url + "/describe", {"Название": "Фото 25 МБ"},
                                    [(f"big{i}.jpg", big) for i in range(10)], timeout=600)
        big_seconds = time.perf_counter() - t
        after = rss_peak_mb(proc.pid)
        over = work / "over_25mb.jpg"
        if not over.is_file() or over.stat().st_size <= 25 * 2**20:
            over.write_bytes(big.read_bytes() + b"\0" * (2**20 + 8192))
        status_over, body_over = post_listing(url + "/describe", None, [("over.jpg", over)], timeout=120)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    facts = {"rps": rps, "done": done[0], "failed": len(failed), "big_status": status, "alive": alive}
    lines = ["### The web app under load", "",
             f"`{' '.join(['python', '-m', 'mmstack', 'serve', '--port', 'PORT'])}` (the README's command) started "
             f"and answered /health in {start_seconds:.0f} s. {clients} client threads on 127.0.0.1 posted "
             f"held-out listings (multipart, 1-3 PNG photos each) for {seconds:.0f} s:", "",
             *table(["requests answered", "failed", "requests / s", "median latency s", "p90 latency s"],
                    [[done[0], len(failed), f"{rps:.2f}", f"{statistics.median(latencies):.2f}",
                      f"{np.percentile(latencies, 90):.2f}"]]), "",
             f"One request with 10 photos of {big.stat().st_size / 2**20:.1f} MB each (real JPEGs, noise at "
             f"quality 100, {big.stat().st_size * 10 / 2**20:.0f} MB body): HTTP {status} in {big_seconds:.1f} s"
             + (f" ({body.get('status')}, {len(body.get('photos', []))} photos read)" if status == 200 else
                f" ({str(body)[:120]})")
             + f"; the server's peak memory {before:.0f} MB before it, {after:.0f} MB after (uploads spool to "
             f"disk, each photo is decoded at reduced scale); the server {'kept running' if alive else 'DIED'}. "
             f"A 26 MB photo: HTTP {status_over} ({body_over.get('error', '')[:100]}).", ""]
    if failed:
        lines += [f"Failures: {failed[:3]}", ""]
    return lines, facts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the shipped ones)")
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--captions", type=int, default=300, help="held-out listings scored for captions")
    parser.add_argument("--timing", type=int, default=30, help="listings timed in process")
    parser.add_argument("--flickr", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--flickr-epochs", type=int, default=25)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmstack-bench/describe"))
    parser.add_argument("--load-seconds", type=float, default=40.0)
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    from mmstack.describe.captioners import NetCaptioner
    from mmstack.describe.pipeline import NET, Describer, load_settings

    describer = Describer(load_settings(dir=str(args.models) if args.models else None))
    describer.warm_up()
    listings, encs = held_out(args.test_rows, args.work, describer.encoder)
    lines = ["## Listing description service (issue 17)", "",
             "Made by `python benchmarks/describe.py` with the shipped models "
             "(`python -m mmstack.describe.train`, seed 0). Held-out listings: the same generated world (categories, products, "
             "how each category's photos look), another draw of listings. 2 CPU cores shared with other work "
             "(load average above 10 during this run): times vary.", ""]
    div_lines, accuracy = diversity_section(describer, listings, encs)
    lines += div_lines
    net = NetCaptioner.load(describer.settings.models_dir / NET)
    lines += embedded_captions(describer, listings, encs, args.captions, net)
    lines += flickr_captions(args.flickr, args.work, describer, args.flickr_epochs)
    lines += timing_section(describer, listings, args.timing)
    if not args.no_load:
        load_lines, facts = load_section([l for l in listings if l.photos][:40], args.work, args.load_seconds)
        lines += load_lines
    text = "\n".join(lines)
    publish("describe", text, record=not args.no_record)


if __name__ == "__main__":
    main()
