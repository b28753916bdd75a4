"""Captioners behind one interface: a listing's features in, a description out (with placeholders, which
:func:`mmstack.describe.masking.restore` fills with the seller's values).

- :class:`RetrievalCaptioner` (retrieval-and-fill): the nearest training listings by photo and attributes; among
  the top k, the description that agrees most with the others (consensus re-ranking), masked, so that the
  service fills it with this listing's values. ``copy_nearest`` is the baseline it is measured against: the
  nearest training listing's description, copied as written.
- :class:`NetCaptioner`: a small GRU decoder trained by the kit, conditioned on the photo features, the
  attribute text's vector, a bag of attribute tokens and the diversity token.
- :class:`LocalVisionCaptioner`: a user's own vision-encoder-decoder model from a local directory (transformers,
  ``local_files_only=True``; nothing downloads).

Saved models hold arrays and strings only (``.npz``, no pickle).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..projection import unit_rows
from ..store import atomic_path

log = logging.getLogger(__name__)

TOKEN = re.compile(r"<[A-Z_]+>|\w+(?:[-'/]\w+)*|[^\w\s]|\n")
NO_SPACE_BEFORE = set(".,!?:;)%")
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


def tokenize(text: str) -> list[str]:
    """Words, punctuation, placeholders and line breaks; words lower-cased (placeholders keep their case)."""
    return [t if t.startswith("<") and t.endswith(">") and len(t) > 2 else t.lower() for t in TOKEN.findall(text)]


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens back to text: no space before punctuation, a capital letter after a sentence's end."""
    out, capital = [], True
    for tok in tokens:
        if tok == "\n":
            out.append("\n")
            capital = True
            continue
        word = tok[:1].upper() + tok[1:] if capital and not tok.startswith("<") else tok
        if out and out[-1] != "\n" and tok not in NO_SPACE_BEFORE and out[-1] != "(":
            out.append(" ")
        out.append(word)
        if tok in {".", "!", "?"}:
            capital = True
        elif tok not in NO_SPACE_BEFORE:
            capital = False
    return "".join(out).strip()


@dataclass
class CaptionQuery:
    """What a captioner reads of a listing: mean photo features (None without photos), the attribute text's unit
    vector (None without text), the masked attribute text and the diversity token."""

    image_vec: np.ndarray | None = None
    text_vec: np.ndarray | None = None
    attributes: str = ""
    variative: bool = False
    photos: list[Image.Image] = field(default_factory=list)


class Captioner(Protocol):
    name: str

    def describe(self, query: CaptionQuery) -> str:
        """A description, possibly with placeholders (<TITLE>, <PRICE>...)."""
        ...


def fit_pca(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centre and top-``k`` axes (dim, k) of ``vectors`` by randomized PCA (scikit-learn): the full covariance
    of 1280-d features is needless work for a few dozen axes. ``k`` shrinks to what the rows allow."""
    from sklearn.decomposition import PCA

    k = max(1, min(k, len(vectors) - 1, vectors.shape[1]))
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(np.asarray(vectors, np.float32))
    return pca.mean_.astype(np.float32), pca.components_.T.astype(np.float32)


class _Projection:
    """PCA of image and text vectors, fitted on the training listings, to unit rows."""

    def __init__(self, centre: np.ndarray, axes: np.ndarray):
        self.centre, self.axes = centre.astype(np.float32), axes.astype(np.float32)

    @classmethod
    def fit(cls, vectors: np.ndarray, k: int, seed: int = 0) -> "_Projection":
        centre, axes = fit_pca(vectors, k, seed)
        return cls(centre, axes)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return unit_rows((np.atleast_2d(vectors).astype(np.float32) - self.centre) @ self.axes)


def _vectors(queries: Sequence[CaptionQuery], attr: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    present = np.array([getattr(q, attr) is not None for q in queries])
    out = np.zeros((len(queries), dim), np.float32)
    for i, q in enumerate(queries):
        if present[i]:
            out[i] = getattr(q, attr)
    return out, present


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _load(path: Path, kind: str) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind} model file (train one: python -m mmstack.describe.train)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a {kind} model file ({exc})") from None
    if str(arrays.get("kind", "")) != kind:
        raise ConfigError(f"{path}: not a {kind} model file")
    return arrays


class RetrievalCaptioner:
    """Retrieval-and-fill (module docstring). Similarity = ``image_weight`` x photo cosine + ``text_weight`` x
    attribute cosine (each only when both listings have it) + a bonus for the same diversity token."""

    name = "retrieval"

    def __init__(self, image_proj: _Projection, text_proj: _Projection, images: np.ndarray, has_image: np.ndarray,
                 texts: np.ndarray, has_text: np.ndarray, variative: np.ndarray, captions: list[str],
                 originals: list[str] | None = None, k: int = 5, image_weight: float = 1.0,
                 text_weight: float = 1.0, same_kind_bonus: float = 0.2):
        self.image_proj, self.text_proj = image_proj, text_proj
        self.images, self.has_image = images.astype(np.float32), has_image.astype(bool)
        self.texts, self.has_text = texts.astype(np.float32), has_text.astype(bool)
        self.variative, self.captions = variative.astype(bool), list(captions)
        self.originals = list(originals) if originals is not None else None
        self.k, self.image_weight, self.text_weight, self.same_kind_bonus = k, image_weight, text_weight, same_kind_bonus

    @classmethod
    def fit(cls, queries: Sequence[CaptionQuery], captions: Sequence[str], originals: Sequence[str] | None = None,
            components: int = 64, **params) -> "RetrievalCaptioner":
        img, has_img = _vectors(queries, "image_vec", 1280)
        txt, has_txt = _vectors(queries, "text_vec", 512)
        image_proj = _Projection.fit(img[has_img] if has_img.sum() > 1 else img, components)
        text_proj = _Projection.fit(txt[has_txt] if has_txt.sum() > 1 else txt, components)
        return cls(image_proj, text_proj, np.where(has_img[:, None], image_proj(img), 0), has_img,
                   np.where(has_txt[:, None], text_proj(txt), 0), has_txt,
                   np.array([q.variative for q in queries]), list(captions), originals, **params)

    def similarities(self, query: CaptionQuery, image_weight: float | None = None,
                     text_weight: float | None = None) -> np.ndarray:
        wi = self.image_weight if image_weight is None else image_weight
        wt = self.text_weight if text_weight is None else text_weight
        sim = np.zeros(len(self.captions))
        if query.image_vec is not None and wi:
            sim += wi * np.where(self.has_image, self.images @ self.image_proj(query.image_vec)[0], -1.0)
        if query.text_vec is not None and wt:
            sim += wt * np.where(self.has_text, self.texts @ self.text_proj(query.text_vec)[0], -1.0)
        return sim + self.same_kind_bonus * (self.variative == query.variative)

    def neighbours(self, query: CaptionQuery, k: int | None = None, **weights) -> np.ndarray:
        sim = self.similarities(query, **weights)
        k = min(k or self.k, len(sim))
        top = np.argpartition(-sim, k - 1)[:k]
        return top[np.argsort(-sim[top], kind="stable")]

    def describe(self, query: CaptionQuery) -> str:
        top = self.neighbours(query)
        if len(top) < 3:
            return self.captions[top[0]]
        # consensus: the candidate whose words agree most with the other candidates' (TF-IDF cosine)
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = [self.captions[i] for i in top]
        tfidf = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None).fit_transform(docs)
        agreement = np.asarray((tfidf @ tfidf.T).sum(axis=1)).ravel()
        return docs[int(np.argmax(agreement))]

    def copy_nearest(self, query: CaptionQuery) -> str:
        """The baseline: the description of the nearest training listing by photo (by text without photos),
        copied as written."""
        by_image = query.image_vec is not None and self.has_image.any()
        top = self.neighbours(query, 1, text_weight=0.0 if by_image else None,
                              image_weight=None if by_image else 0.0)
        return (self.originals or self.captions)[top[0]]

    def save(self, path: Path) -> None:
        _save(path, {"kind": np.array("retrieval"), "image_centre": self.image_proj.centre,
                     "image_axes": self.image_proj.axes.astype(np.float16), "text_centre": self.text_proj.centre,
                     "text_axes": self.text_proj.axes.astype(np.float16), "images": self.images.astype(np.float16),
                     "has_image": self.has_image, "texts": self.texts.astype(np.float16), "has_text": self.has_text,
                     "variative": self.variative, "captions": np.array(self.captions),
                     # the descriptions as written: the "copy the nearest caption" baseline reads them
                     **({"originals": np.array(self.originals)} if self.originals is not None else {}),
                     "params": np.array([self.k, self.image_weight, self.text_weight, self.same_kind_bonus])})

    @classmethod
    def load(cls, path: Path) -> "RetrievalCaptioner":
        a = _load(path, "retrieval")
        k, wi, wt, bonus = a["params"]
        return cls(_Projection(a["image_centre"], a["image_axes"]), _Projection(a["text_centre"], a["text_axes"]),
                   a["images"], a["has_image"], a["texts"], a["has_text"], a["variative"],
                   [str(c) for c in a["captions"]],
                   [str(c) for c in a["originals"]] if "originals" in a else None, k=int(k), image_weight=float(wi), text_weight=float(wt),
                   same_kind_bonus=float(bonus))


class _CaptionNet:
    """The torch module, built on demand (torch imports only when the net is used)."""

    @staticmethod
    def build(vocab_size: int, cond_dim: int, emb: int, hidden: int):
        import torch
        from torch import nn

        class CaptionNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(vocab_size, emb, padding_idx=0)
                self.cond = nn.Sequential(nn.Linear(cond_dim + emb, hidden), nn.Tanh())
                self.gru = nn.GRU(emb + hidden, hidden, batch_first=True)
                self.out = nn.Linear(hidden, vocab_size)

            def condition(self, cond, attr_ids):
                mask = (attr_ids > 0).float().unsqueeze(-1)
                bag = (self.emb(attr_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                return self.cond(torch.cat([cond, bag], dim=1))

            def forward(self, c, inp, h=None):
                x = torch.cat([self.emb(inp), c.unsqueeze(1).expand(-1, inp.shape[1], -1)], dim=2)
                out, h = self.gru(x, c.unsqueeze(0).contiguous() if h is None else h)
                return self.out(out), h

        return CaptionNet()


class NetCaptioner:
    """A small captioning net: condition = [photo PCA, has photo, attribute-text PCA, has text, variative] and
    the mean embedding of the attribute tokens -> the GRU's first state; greedy decoding that never repeats a
    trigram."""

    name = "net"

    def __init__(self, vocab: list[str], image_proj: _Projection, text_proj: _Projection, state: dict,
                 emb: int = 64, hidden: int = 128, max_len: int = 64):
        self.vocab, self.index = list(vocab), {t: i for i, t in enumerate(vocab)}
        self.image_proj, self.text_proj = image_proj, text_proj
        self.emb, self.hidden, self.max_len = emb, hidden, max_len
        self.cond_dim = image_proj.axes.shape[1] + text_proj.axes.shape[1] + 3
        self.net = _CaptionNet.build(len(vocab), self.cond_dim, emb, hidden)
        if state:
            import torch

            self.net.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()})
        self.net.eval()

    def _cond(self, queries: Sequence[CaptionQuery]) -> np.ndarray:
        img, has_img = _vectors(queries, "image_vec", 1280)
        txt, has_txt = _vectors(queries, "text_vec", 512)
        return np.hstack([np.where(has_img[:, None], self.image_proj(img), 0), has_img[:, None],
                          np.where(has_txt[:, None], self.text_proj(txt), 0), has_txt[:, None],
                          np.array([[q.variative] for q in queries])]).astype(np.float32)

    def _ids(self, tokens: Sequence[str], length: int) -> list[int]:
        ids = [self.index.get(t, self.index[UNK]) for t in tokens][:length]
        return ids + [0] * (length - len(ids))

    def _attr_ids(self, queries: Sequence[CaptionQuery], length: int = 48) -> np.ndarray:
        return np.array([self._ids(tokenize(q.attributes), length) for q in queries], np.int64)

    @classmethod
    def fit(cls, queries: Sequence[CaptionQuery], captions: Sequence[str], components: int = 64, min_count: int = 2,
            epochs: int = 25, batch_size: int = 64, lr: float = 3e-3, seed: int = 0, emb: int = 64,
            hidden: int = 128, max_len: int = 64, num_threads: int = 1) -> "NetCaptioner":
        import torch

        from ..threads import torch_threads

        from collections import Counter

        tokens = [tokenize(c)[:max_len - 1] for c in captions]
        counts = Counter(t for seq in tokens for t in seq)
        counts.update(t for q in queries for t in tokenize(q.attributes))
        vocab = [PAD, BOS, EOS, UNK] + sorted(t for t, n in counts.items() if n >= min_count)
        img, has_img = _vectors(queries, "image_vec", 1280)
        txt, has_txt = _vectors(queries, "text_vec", 512)
        image_proj = _Projection.fit(img[has_img] if has_img.sum() > 1 else img, components)
        text_proj = _Projection.fit(txt[has_txt] if has_txt.sum() > 1 else txt, components)
        model = cls(vocab, image_proj, text_proj, {}, emb, hidden, max_len)
        torch.manual_seed(seed)
        cond = torch.from_numpy(model._cond(queries))
        attrs = torch.from_numpy(model._attr_ids(queries))
        seqs = torch.tensor([model._ids([BOS] + seq + [EOS], max_len + 1) for seq in tokens])
        net = model.net.train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=0)
        gen = torch.Generator().manual_seed(seed)
        with torch_threads(num_threads):
            for epoch in range(epochs):
                order = torch.randperm(len(seqs), generator=gen)
                total = 0.0
                for start in range(0, len(order), batch_size):
                    b = order[start:start + batch_size]
                    length = int((seqs[b] > 0).sum(1).max())
                    inp, out = seqs[b, :length - 1], seqs[b, 1:length]
                    logits, _ = net(net.condition(cond[b], attrs[b]), inp)
                    loss = loss_fn(logits.reshape(-1, logits.shape[-1]), out.reshape(-1))
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    total += loss.item() * len(b)
                log.info("caption net epoch %d: loss %.3f", epoch + 1, total / len(seqs))
        net.eval()
        return model

    def describe(self, query: CaptionQuery) -> str:
        return self.describe_many([query])[0]

    def describe_many(self, queries: Sequence[CaptionQuery]) -> list[str]:
        import torch

        with torch.inference_mode():
            c = self.net.condition(torch.from_numpy(self._cond(queries)), torch.from_numpy(self._attr_ids(queries)))
            n = len(queries)
            seqs: list[list[int]] = [[] for _ in range(n)]
            done = np.zeros(n, bool)
            inp = torch.full((n, 1), self.index[BOS], dtype=torch.long)
            h = None
            banned_ids = [self.index[t] for t in (PAD, BOS, UNK)]
            for _ in range(self.max_len):
                logits, h = self.net(c, inp, h)
                scores = logits[:, -1].clone()
                scores[:, banned_ids] = -1e9
                for i in range(n):  # never repeat a trigram
                    s = seqs[i]
                    if len(s) >= 2:
                        for j in range(len(s) - 2):
                            if s[j] == s[-2] and s[j + 1] == s[-1]:
                                scores[i, s[j + 2]] = -1e9
                nxt = scores.argmax(dim=1)
                for i in range(n):
                    if not done[i]:
                        if int(nxt[i]) == self.index[EOS]:
                            done[i] = True
                        else:
                            seqs[i].append(int(nxt[i]))
                if done.all():
                    break
                inp = nxt.unsqueeze(1)
        return [detokenize([self.vocab[t] for t in s]) for s in seqs]

    def save(self, path: Path) -> None:
        state = {f"state_{k}": v.detach().numpy().astype(np.float16) for k, v in self.net.state_dict().items()}
        _save(path, {"kind": np.array("net"), "vocab": np.array(self.vocab), "image_centre": self.image_proj.centre,
                     "image_axes": self.image_proj.axes, "text_centre": self.text_proj.centre,
                     "text_axes": self.text_proj.axes, "sizes": np.array([self.emb, self.hidden, self.max_len]),
                     **state})

    @classmethod
    def load(cls, path: Path) -> "NetCaptioner":
        a = _load(path, "net")
        state = {k[len("state_"):]: v for k, v in a.items() if k.startswith("state_")}
        emb, hidden, max_len = (int(v) for v in a["sizes"])
        return cls([str(t) for t in a["vocab"]], _Projection(a["image_centre"], a["image_axes"]),
                   _Projection(a["text_centre"], a["text_axes"]), state, emb, hidden, max_len)


class LocalVisionCaptioner:
    """A user's vision-encoder-decoder captioning model from a local directory (``save_pretrained`` layout:
    config, weights, image processor and tokenizer files). Reads the listing's best photo (the first one given)."""

    name = "local"

    def __init__(self, path: str | Path, max_new_tokens: int = 40, num_beams: int = 1):
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path}: no such model directory (a vision-encoder-decoder model saved with "
                              "save_pretrained)")
        try:
            from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

            self.model = VisionEncoderDecoderModel.from_pretrained(path, local_files_only=True).eval()
            self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{path}: cannot load a vision-encoder-decoder model from it ({first})") from None
        self.path, self.max_new_tokens, self.num_beams = path, max_new_tokens, num_beams

    def describe(self, query: CaptionQuery) -> str:
        if not query.photos:
            return ""
        import torch

        pixels = self.processor(images=[query.photos[0].convert("RGB")], return_tensors="pt").pixel_values
        with torch.inference_mode():
            ids = self.model.generate(pixels, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        return self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
