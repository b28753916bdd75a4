"""Russian toxicity classifier: obfuscation-normalised text, a lexicon of obscene/insulting roots, a character
n-gram model, an optional USE-embedding head and a logistic-regression stacker over them.

Scoring a text (:meth:`ToxicityModel.score`):

1. :func:`mmstack.moderation.normalise.normalise` undoes obfuscation (х*й, cyka, б л я, п1зда);
2. the lexicon counts strong words (obscene, insult, slur) and rude ones;
3. a character 2-5-gram model (hashed, TF-IDF, logistic regression) reads the text with every lexicon word
   replaced by a tag of its category, so it learns the context of insults rather than memorising stems that
   innocent words share (сучок, хохлома);
4. optionally, a logistic regression on the USE multilingual sentence embedding of the normalised text;
5. a logistic regression over the heads' scores and the lexicon counts gives the probability. It was fitted on
   out-of-fold head scores, with folds grouped by ``pair_id`` (a comment and its rewrites never straddle folds).

The model file (``toxicity_model.npz``) holds arrays and the lexicon text only (no pickle): it loads offline,
without the training data. ``python -m mmstack.moderation.toxicity train --data DIR --out FILE`` retrains it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import ConfigError, InputError
from ..store import atomic_path
from .lexicon import LEXICON_FILE, Lexicon
from .normalise import normalise

log = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).with_name("toxicity_model.npz")
FORMAT = 1
N_FEATURES = 2 ** 18
NGRAMS = (2, 5)
CHAR_C = 4.0
USE_C = 2.0
META_C = 1.0
# what the character model sees instead of a lexicon word, one symbol per category
TAGS = {"obscene": "ⓞ", "insult": "ⓘ", "slur": "ⓢ", "rude": "ⓡ"}
STRONG = ("obscene", "insult", "slur")
WORD = re.compile(r"[а-я]+")
THRESHOLD_GRID = np.round(np.arange(0.10, 0.91, 0.01), 2)
THRESHOLD_TOLERANCE = 0.002  # mean proxy F1 within which thresholds count as equally good


def _hasher() -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=NGRAMS, n_features=N_FEATURES,
                             alternate_sign=False, norm=None, lowercase=False)


def tag_lexicon_words(text: str, lexicon: Lexicon) -> str:
    """``text`` (normalised) with each lexicon word replaced by the tag of its category."""
    return WORD.sub(lambda m: TAGS.get(lexicon.category(m.group(0)) or "", m.group(0)), text)


def lexicon_features(texts: Sequence[str], lexicon: Lexicon) -> np.ndarray:
    """(n, 4): log(1 + strong words), any strong word, log(1 + rude words), any rude word.

    Obscene, insult and slur words share one weight: slurs are rare in the training data, and a per-category
    weight would teach the model that they matter little.
    """
    counts = lexicon.counts(list(texts))
    strong = counts[:, :len(STRONG)].sum(axis=1)
    rude = counts[:, len(STRONG)]
    return np.column_stack([np.log1p(strong), strong > 0, np.log1p(rude), rude > 0]).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


@dataclass
class Prepared:
    """A batch of texts as the heads read them."""

    present: np.ndarray  # bool: a non-empty text
    normalised: list[str]
    tagged: list[str]
    lexicon: np.ndarray


def prepare(texts: Sequence[Any], lexicon: Lexicon) -> Prepared:
    normalised = [normalise(t, lexicon) for t in texts]
    present = np.array([bool(t.strip()) for t in normalised], bool)
    return Prepared(present, normalised, [tag_lexicon_words(t, lexicon) for t in normalised],
                    lexicon_features(normalised, lexicon))


def _embed(texts: list[str], encoder=None, progress: bool = False) -> np.ndarray:
    from ..features.text_embed import embed_texts, make_encoder

    encoder = encoder or make_encoder("use")
    vectors = embed_texts(encoder, texts, batch_size=64, progress=progress)
    return np.nan_to_num(vectors)


@dataclass
class ToxicityModel:
    """A trained classifier; :meth:`score` gives P(toxic) per text, :meth:`load` / :meth:`save` a .npz file."""

    lexicon_text: str
    idf: np.ndarray
    char_coef: np.ndarray
    char_intercept: float
    use_coef: np.ndarray | None
    use_intercept: float
    meta_full: np.ndarray | None  # [intercept, char, use, 4 lexicon features]
    meta_fast: np.ndarray  # [intercept, char, 4 lexicon features]
    threshold: float
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lexicon = Lexicon.loads(self.lexicon_text)
        self._tfidf = TfidfTransformer(sublinear_tf=True)
        self._tfidf.idf_ = self.idf.astype(np.float64)

    @property
    def has_embeddings(self) -> bool:
        return self.use_coef is not None and self.meta_full is not None

    def char_scores(self, tagged: list[str]) -> np.ndarray:
        x = self._tfidf.transform(_hasher().transform(tagged))
        return x @ self.char_coef.astype(np.float64) + self.char_intercept

    def score(self, texts: Sequence[Any], embeddings: bool | None = None, encoder=None,
              progress: bool = False) -> np.ndarray:
        """P(toxic) of each text, float64 in [0, 1]; a missing or empty text scores 0.

        ``embeddings``: use the USE head (default: when the model has one). Without it the fast path (lexicon
        and characters) scores ~10x faster at a small cost in quality (BENCHMARKS.md).
        """
        use_embeddings = self.has_embeddings if embeddings is None else embeddings
        parts = self.components(texts, use_embeddings, encoder, progress)
        return parts["full" if use_embeddings else "fast"]

    def components(self, texts: Sequence[Any], embeddings: bool = True, encoder=None,
                   progress: bool = False) -> dict[str, np.ndarray]:
        """The probability of each part on its own, for comparing them: "lexicon" (1 with a strong word, 0.4
        with only a rude one), "chars" and "use" (each head's logistic regression), "fast" (the stacker
        without embeddings) and "full" (with them; only when ``embeddings``). Empty texts score 0 in all."""
        if embeddings and not self.has_embeddings:
            raise ConfigError("this toxicity model was trained without embeddings; score with embeddings = false")
        batch = prepare(texts, self.lexicon)
        n = len(batch.normalised)
        out = {name: np.zeros(n) for name in ("lexicon", "chars", "fast") + (("use", "full") if embeddings else ())}
        rows = np.flatnonzero(batch.present)
        if not len(rows):
            return out
        lex = batch.lexicon[rows]
        out["lexicon"][rows] = np.where(lex[:, 1] > 0, 1.0, np.where(lex[:, 3] > 0, 0.4, 0.0))
        char = self.char_scores([batch.tagged[i] for i in rows])
        out["chars"][rows] = _sigmoid(char)
        out["fast"][rows] = _sigmoid(np.column_stack([char, lex]) @ self.meta_fast[1:] + self.meta_fast[0])
        if embeddings:
            vectors = _embed([batch.normalised[i] for i in rows], encoder, progress)
            use = vectors @ self.use_coef.astype(np.float64) + self.use_intercept
            out["use"][rows] = _sigmoid(use)
            full = np.column_stack([char, use, lex])
            out["full"][rows] = _sigmoid(full @ self.meta_full[1:] + self.meta_full[0])
        return out

    def save(self, path: Path) -> None:
        arrays = {
            "format": np.array(FORMAT), "lexicon": np.array(self.lexicon_text),
            "info": np.array(json.dumps(self.info, ensure_ascii=False)),
            "idf": self.idf.astype(np.float16), "char_coef": self.char_coef.astype(np.float16),
            "char_intercept": np.array(self.char_intercept), "meta_fast": self.meta_fast.astype(np.float64),
            "threshold": np.array(self.threshold),
        }
        if self.has_embeddings:
            arrays.update(use_coef=self.use_coef.astype(np.float32), use_intercept=np.array(self.use_intercept),
                          meta_full=self.meta_full.astype(np.float64))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path | str = MODEL_FILE) -> "ToxicityModel":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no toxicity model file here (train one: python -m "
                              f"mmstack.moderation.toxicity train --data DIR --out {path})") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a toxicity model file ({exc})") from None
        if int(arrays.get("format", -1)) != FORMAT:
            raise ConfigError(f"{path}: toxicity model format {arrays.get('format')}, expected {FORMAT}")
        has_use = "use_coef" in arrays
        return cls(
            lexicon_text=str(arrays["lexicon"]), idf=arrays["idf"].astype(np.float32),
            char_coef=arrays["char_coef"].astype(np.float32), char_intercept=float(arrays["char_intercept"]),
            use_coef=arrays["use_coef"] if has_use else None,
            use_intercept=float(arrays["use_intercept"]) if has_use else 0.0,
            meta_full=arrays["meta_full"] if has_use else None, meta_fast=arrays["meta_fast"],
            threshold=float(arrays["threshold"]), info=json.loads(str(arrays["info"])))


# ---------------------------------------------------------------- training


def _fit_char(tagged: list[str], y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    counts = _hasher().transform(tagged)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    model = LogisticRegression(C=CHAR_C, solver="liblinear", max_iter=2000, random_state=seed)
    model.fit(tfidf.transform(counts), y)
    return tfidf.idf_.astype(np.float32), model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _char_decision(tagged: list[str], idf: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    tfidf = TfidfTransformer(sublinear_tf=True)
    tfidf.idf_ = idf.astype(np.float64)
    return tfidf.transform(_hasher().transform(tagged)) @ coef.astype(np.float64) + intercept


def _fit_use(vectors: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    model = LogisticRegression(C=USE_C, max_iter=3000, random_state=seed).fit(vectors, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _fit_meta(features: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    model = LogisticRegression(C=META_C, max_iter=2000, random_state=seed).fit(features, y)
    return np.concatenate([model.intercept_, model.coef_[0]]).astype(np.float64)


def prior_weights(y: np.ndarray, prior: float) -> np.ndarray:
    """Sample weights that make the toxic share ``prior`` (negatives re-weighted, positives weight 1)."""
    rate = float(np.mean(y))
    if rate in (0.0, 1.0):
        return np.ones(len(y))
    return np.where(y == 1, 1.0, rate / (1 - rate) * (1 - prior) / prior)


def choose_threshold(proxies: list[tuple[np.ndarray, np.ndarray]], prior: float,
                     tolerance: float = THRESHOLD_TOLERANCE) -> tuple[float, float]:
    """The decision threshold from proxy sets (y, p), each re-weighted to the toxic share ``prior`` (so the dev
    set's own 40% toxic rate does not decide it): the middle of the plateau of thresholds whose mean F1 over the
    proxies is within ``tolerance`` of the best. The curve is flat (about 0.3-0.55 on the dev set), so its argmax
    wanders with any change; the middle is stable, keeps recall, and stays clear of the 0.3-0.4 that unfamiliar
    clean text (other sources, other genres) drifts to. Returns (threshold, its mean F1)."""
    weights = [prior_weights(y, prior) for y, _ in proxies]
    means = np.array([np.mean([f1_score(y, p >= t, sample_weight=w, zero_division=0)
                               for (y, p), w in zip(proxies, weights)]) for t in THRESHOLD_GRID])
    plateau = np.flatnonzero(means >= means.max() - tolerance)
    pick = int(plateau[len(plateau) // 2])
    return float(THRESHOLD_GRID[pick]), float(means[pick])


def read_training_data(path: Path) -> pd.DataFrame:
    """text, toxic (0/1) and pair_id (optional: each row its own group) from a CSV file or a folder with
    toxic.csv."""
    path = Path(path)
    file = path / "toxic.csv" if path.is_dir() else path
    try:
        frame = pd.read_csv(file)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(file, f"cannot read the training table ({type(exc).__name__})") from None
    for column in ("text", "toxic"):
        if column not in frame.columns:
            raise InputError(file, "missing column (expected text, toxic and optionally pair_id)", column)
    labels = pd.to_numeric(frame["toxic"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():  # rows are counted from 1, the header not counted (as in mmstack.data.schema)
        raise InputError(file, f"expected 0 or 1, got {frame['toxic'][bad].iloc[0]!r}", "toxic",
                         int(np.flatnonzero(bad)[0]) + 1)
    frame["toxic"] = labels.astype(int)
    if "pair_id" not in frame.columns:
        frame["pair_id"] = np.arange(len(frame)).astype(str)
    frame["text"] = frame["text"].fillna("").astype(str)
    return frame[["text", "toxic", "pair_id"]].reset_index(drop=True)


def train(frame: pd.DataFrame, *, seed: int = 0, embeddings: bool = True, prior: float = 1 / 3,
          n_folds: int = 5, encoder=None, lexicon_text: str | None = None, progress: bool = False) -> ToxicityModel:
    """Fit the classifier on ``frame`` (text, toxic, pair_id); the same data and seed give the same model.

    Heads are scored out of fold (folds grouped by pair_id) to fit the stacker; the threshold comes from the mean
    F1, at the toxic share ``prior`` of a real comment stream, over the out-of-fold scores of the texts and of
    3-8 word fragments of them (short comments), each scored by models that did not see their pair
    (:func:`choose_threshold`).
    """
    from .distort import fragments

    start = time.perf_counter()
    lexicon = Lexicon.loads(lexicon_text or LEXICON_FILE.read_text(encoding="utf-8"))
    frame = frame.reset_index(drop=True)
    y = frame["toxic"].to_numpy(int)
    if len(np.unique(y)) < 2:
        raise InputError("training data", "needs both toxic (1) and clean (0) texts", "toxic")
    groups = frame["pair_id"].astype(str).to_numpy()
    n_folds = max(2, min(n_folds, int(np.bincount(y).min()), len(np.unique(groups))))
    folds = list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(frame, y, groups))
    texts = prepare(frame["text"].tolist(), lexicon)
    frags = prepare(fragments(frame, seed).tolist(), lexicon)
    vectors = frag_vectors = None
    if embeddings:
        from ..features.text_embed import make_encoder

        encoder = encoder or make_encoder("use")
        vectors = _embed(texts.normalised, encoder, progress)
        frag_vectors = _embed(frags.normalised, encoder, progress)

    def heads(rows, score_sets):
        """Fit the heads on ``rows``; scores [char, (use)] of each (prepared batch, vectors, rows) set."""
        idf, coef, b = _fit_char([texts.tagged[i] for i in rows], y[rows], seed)
        use = _fit_use(vectors[rows], y[rows], seed) if embeddings else None
        out = []
        for batch, vecs, idx in score_sets:
            cols = [_char_decision([batch.tagged[i] for i in idx], idf, coef, b)]
            if use is not None:
                cols.append(vecs[idx] @ use[0].astype(np.float64) + use[1])
            out.append(np.column_stack(cols))
        return (idf, coef, b, use), out

    n_heads = 2 if embeddings else 1
    oof = np.zeros((len(frame), n_heads))
    frag_oof = np.zeros((len(frame), n_heads))
    for k, (fit_rows, held) in enumerate(folds):
        _, (scores, frag_scores) = heads(fit_rows, [(texts, vectors, held), (frags, frag_vectors, held)])
        oof[held], frag_oof[held] = scores, frag_scores
        log.info("toxicity: fold %d/%d scored", k + 1, n_folds)
    (idf, coef, b, use), _ = heads(np.arange(len(frame)), [])

    meta_fast = _fit_meta(np.column_stack([oof[:, 0], texts.lexicon]), y, seed)
    meta_full = _fit_meta(np.column_stack([oof, texts.lexicon]), y, seed) if embeddings else None
    meta, cols = (meta_full, n_heads) if embeddings else (meta_fast, 1)
    # the stacker's own out-of-fold probabilities pick the threshold
    proxies = []
    for head_scores, batch in ((oof, texts), (frag_oof, frags)):
        prob = np.zeros(len(frame))
        for fit_rows, held in folds:
            m = _fit_meta(np.column_stack([oof[fit_rows, :cols], texts.lexicon[fit_rows]]), y[fit_rows], seed)
            prob[held] = _sigmoid(np.column_stack([head_scores[held, :cols], batch.lexicon[held]]) @ m[1:] + m[0])
        prob[~batch.present] = 0.0
        proxies.append((y, prob))
    threshold, proxy_f1 = choose_threshold(proxies, prior)
    info = {
        "trained": dt.datetime.now().isoformat(timespec="seconds"), "rows": int(len(frame)),
        "toxic_share": round(float(y.mean()), 4), "seed": seed, "folds": n_folds, "prior": round(prior, 4),
        "embeddings": "use" if embeddings else None, "n_features": N_FEATURES, "ngrams": list(NGRAMS),
        "threshold_proxy_f1": round(proxy_f1, 4), "seconds": round(time.perf_counter() - start, 1),
    }
    log.info("toxicity: trained on %d texts in %.0fs, threshold %.2f (mean proxy F1 %.3f)",
             len(frame), info["seconds"], threshold, proxy_f1)
    return ToxicityModel(
        lexicon_text=lexicon_text or LEXICON_FILE.read_text(encoding="utf-8"), idf=idf, char_coef=coef,
        char_intercept=b, use_coef=use[0] if use else None, use_intercept=use[1] if use else 0.0,
        meta_full=meta_full, meta_fast=meta_fast, threshold=threshold, info=info)


_DEFAULT: dict[str, ToxicityModel] = {}


def load_default() -> ToxicityModel:
    """The model shipped in the package (loaded once per process)."""
    if "model" not in _DEFAULT:
        _DEFAULT["model"] = ToxicityModel.load(MODEL_FILE)
    return _DEFAULT["model"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmstack.moderation.toxicity",
                                     description="Train the Russian toxicity classifier.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("train", help="retrain from a folder with toxic.csv (text, toxic, pair_id)")
    cmd.add_argument("--data", type=Path, required=True, help="folder with toxic.csv, or the CSV file")
    cmd.add_argument("--out", type=Path, default=MODEL_FILE, help=f"model file (default {MODEL_FILE.name})")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--prior", type=float, default=1 / 3, help="toxic share of real comments (threshold)")
    cmd.add_argument("--no-embeddings", action="store_true", help="no USE head: lexicon and characters only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    from ..errors import MmstackError

    try:
        model = train(read_training_data(args.data), seed=args.seed, prior=args.prior,
                      embeddings=not args.no_embeddings, progress=True)
        model.save(args.out)
    except MmstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB, threshold {model.threshold:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
