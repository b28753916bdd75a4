"""The product embedding: a two-tower image/text net trained contrastively on each product's own image-text pair.

Inputs per product: the mean EfficientNet-Lite0 pooled features over its images (1280-d) and its text features
(:meth:`ProductEmbedder.text_inputs`: USE embeddings of the title and of title + attributes + description, and a
TruncatedSVD of word and character TF-IDF of title + attributes). Each tower (standardise, then dropout and an
MLP beside a linear path that starts as the PCA of the side) maps its side to ``dim`` dims; the symmetric InfoNCE
loss (CLIP's) pulls a product's image and text together and pushes them away from the other products' in the
batch. The fused embedding is ``unit(image_weight * unit(z_image) + unit(z_text))`` (one side alone where the
other is missing).

Why this shape (measured on Myntra, BENCHMARKS.md "Products: proxy tasks"): a plain MLP tower trained for the
image-text agreement keeps what both sides show and drops what only the text says (Boys/Girls, the exact
article word), so its fusion lost to the text alone and to the concatenation of the two sides' PCA. The linear
path keeps each side's principal axes, and weighting the image side by 0.5 lets the title lead, the photo add.

No label is read, so the embedding cannot leak a proxy label. A catalogue with fewer than ``min_pairs`` products
that have both an image and a text (e.g. Shopee, titles only) cannot train the towers: each tower then becomes
the PCA projection of its standardised side (still a linear layer of the same net, so export and serving are
unchanged) and the log says so.

:class:`ProductEmbedder` holds everything needed to embed a new product (text vectorisers, scalers, the net's
weights): it is saved in the ``product_embed`` block's extras and exported to ONNX by :mod:`mmstack.products.export`.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..projection import pca_fit, unit_rows
from ..threads import torch_threads

log = logging.getLogger(__name__)

IMAGE_DIM = 1280
HEAD_SCALE = 16.0  # supervised heads read the unit fused embedding: logits = scale * (W z + b)


@dataclass
class LabelHead:
    """One label column for a supervised head: codes per training row (-1: missing) and class weights."""

    codes: torch.Tensor
    n_classes: int
    weights: torch.Tensor

    @classmethod
    def of(cls, codes: np.ndarray, n_classes: int, power: float) -> "LabelHead":
        """Class weights (n / (k * count)) ** power over the labelled rows: rare classes (a few dozen children's
        products among thousands) weigh more."""
        codes = np.asarray(codes, np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=n_classes).astype(np.float64)
        weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / n_classes) ** power, 0.0)
        return cls(torch.as_tensor(codes), n_classes, torch.as_tensor(weights, dtype=torch.float32))


def product_text(rows: pd.DataFrame, max_chars: int) -> list[str]:
    """``title. attributes. description`` (description cut at ``max_chars``) per row; "" when all are empty."""
    out = []
    for title, attrs, desc in zip(rows["title"], rows["attributes"], rows["description"]):
        parts = [t for t in (title, attrs) if isinstance(t, str) and t.strip()]
        if isinstance(desc, str) and desc.strip():
            parts.append(desc[:max_chars] if max_chars else desc)
        out.append(". ".join(" ".join(p.split()) for p in parts))
    return out


def title_lines(titles) -> list[str]:
    """Each title on one line with single spaces; "" where it is missing."""
    return [" ".join(t.split()) if isinstance(t, str) else "" for t in titles]


def lexical_text(rows: pd.DataFrame) -> list[str]:
    """Title and attributes, the words a TF-IDF of the product should see."""
    return [" ".join(t for t in (title, attrs) if isinstance(t, str)) for title, attrs in
            zip(rows["title"], rows["attributes"])]


class Tower(nn.Module):
    """Standardised input -> dropout -> Linear -> GELU -> Linear (``dim``), plus a linear path (``skip``, started
    as the PCA of the standardised input) so that what a side says on its own survives the contrastive training;
    or a single Linear (the PCA fallback)."""

    def __init__(self, n_in: int, hidden: int, dim: int, dropout: float, linear: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        if linear:
            self.body = nn.Sequential(nn.Linear(n_in, dim))
            self.skip = None
        else:
            self.body = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, dim))
            self.skip = nn.Linear(n_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * self.scale
        return self.body(z) if self.skip is None else self.body(z) + self.skip(z)


class FusionNet(nn.Module):
    """Two towers and their fusion. ``forward(image, image_present, text, text_present)`` -> unit embeddings; a
    side whose ``*_present`` is 0 is left out of the sum (a product without any input gets zeros)."""

    def __init__(self, text_dim: int, dim: int, hidden: int, dropout: float, linear: bool = False,
                 image_weight: float = 1.0):
        super().__init__()
        self.image_weight = float(image_weight)
        self.image = Tower(IMAGE_DIM, hidden, dim, dropout, linear)
        self.text = Tower(text_dim, hidden, dim, dropout, linear)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def towers(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (nn.functional.normalize(self.image(image), dim=1, eps=1e-8),
                nn.functional.normalize(self.text(text), dim=1, eps=1e-8))

    def forward(self, image: torch.Tensor, image_present: torch.Tensor, text: torch.Tensor,
                text_present: torch.Tensor) -> torch.Tensor:
        zi, zt = self.towers(image, text)
        return self.fuse(zi * image_present, zt * text_present)

    def fuse(self, zi: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        """unit(image_weight * z_image + z_text): the titles name what the photos only show, so the text side
        leads by default."""
        return nn.functional.normalize(self.image_weight * zi + zt, dim=1, eps=1e-8)


def clip_loss(zi: torch.Tensor, zt: torch.Tensor, log_temperature: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, text) rows."""
    logits = zi @ zt.T * log_temperature.clamp(max=float(np.log(100.0))).exp()
    labels = torch.arange(len(zi))
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


@dataclass
class ProductEmbedder:
    """A fitted product embedder: text featurisers, the fusion net's weights, and how it was trained."""

    params: dict[str, Any]
    text_dim: int
    linear: bool
    tfidf: list[Any] = field(default_factory=list)  # fitted TfidfVectorizers (word, char) of lexical_text
    svd: Any = None  # TruncatedSVD over the hstacked TF-IDF, or None
    state: dict[str, Any] = field(default_factory=dict)  # FusionNet state_dict
    history: list[float] = field(default_factory=list)  # training loss per epoch

    # -- features -------------------------------------------------------------------------------------------
    def text_inputs(self, rows: pd.DataFrame, encoder=None) -> tuple[np.ndarray, np.ndarray]:
        """Text features (rows x text_dim, float32) and whether the row has any text (0/1)."""
        from ..features.text_embed import embed_texts, make_encoder

        p = self.params
        encoder = encoder or make_encoder(p["encoder"], num_threads=p["num_threads"] or None)
        titles = title_lines(rows["title"])
        full = product_text(rows, p["max_chars"])
        vectors = embed_texts(encoder, titles + full, desc="product_embed text")
        n = len(rows)
        parts = [np.nan_to_num(vectors[:n]), np.nan_to_num(vectors[n:])]
        if self.svd is not None:
            parts.append(self.svd.transform(self._tfidf(lexical_text(rows))).astype(np.float32))
        present = np.array([bool(t) for t in full], np.float32)
        return np.hstack(parts).astype(np.float32), present

    def _tfidf(self, texts: list[str]):
        import scipy.sparse as sp

        return sp.hstack([v.transform(texts) for v in self.tfidf], format="csr")

    def fit_text(self, rows: pd.DataFrame, seed: int) -> None:
        """Fit the TF-IDF vectorisers and SVD on these rows' texts (no labels involved)."""
        import scipy.sparse as sp
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        k = self.params["svd_components"]
        texts = lexical_text(rows)
        if not k:
            return
        vectorizers = [TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True, max_features=50_000,
                                       dtype=np.float32),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True,
                                       max_features=50_000, dtype=np.float32)]
        fitted, mats = [], []
        for vec in vectorizers:
            try:
                mats.append(vec.fit_transform(texts))
                fitted.append(vec)
            except ValueError:  # empty vocabulary
                continue
        if not mats:
            return
        mat = sp.hstack(mats, format="csr")
        k = min(k, mat.shape[1] - 1, len(texts) - 1)
        if k < 1:
            return
        self.tfidf = fitted
        self.svd = TruncatedSVD(n_components=k, random_state=seed).fit(mat)

    # -- the net --------------------------------------------------------------------------------------------
    def net(self) -> FusionNet:
        p = self.params
        net = FusionNet(self.text_dim, p["dim"], p["hidden"], p["dropout"], self.linear, p["image_weight"])
        if self.state:
            net.load_state_dict(self.state)
        return net.eval()

    def embed(self, image: np.ndarray, image_present: np.ndarray, text: np.ndarray,
              text_present: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Unit embeddings (rows x dim, float32) from the towers' inputs."""
        net = self.net()
        out = []
        with torch.inference_mode(), torch_threads(self.params["num_threads"] or None):
            for s in range(0, len(image), batch_size):
                sl = slice(s, s + batch_size)
                out.append(net(*(torch.as_tensor(np.asarray(a[sl], np.float32)).reshape(len(a[sl]), -1)
                                 for a in (image, image_present, text, text_present))).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.params["dim"]), np.float32)

    def towers(self, image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each tower's unit output (rows x dim) alone: the image-only and text-only learned embeddings."""
        net = self.net()
        with torch.inference_mode():
            zi, zt = net.towers(torch.as_tensor(image, dtype=torch.float32), torch.as_tensor(text, dtype=torch.float32))
        return zi.numpy(), zt.numpy()


def _set_scaler(tower: Tower, x: np.ndarray) -> None:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    tower.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    tower.scale.copy_(torch.as_tensor(np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0), dtype=torch.float32))


def _start_tower(tower: Tower, x: np.ndarray, dim: int) -> None:
    """Standardise the tower's input on ``x`` and start its linear layer (the whole PCA fallback tower, or a
    trained tower's linear path) as the PCA projection of the standardised input (axes beyond the rank give 0)."""
    _set_scaler(tower, x)
    z = ((torch.as_tensor(x, dtype=torch.float32) - tower.mean) * tower.scale).numpy()
    k = min(dim, z.shape[1], len(z))
    _, _, axes = pca_fit(z, np.arange(len(z)), k)
    weight = np.zeros((dim, z.shape[1]), np.float32)
    weight[:k] = axes.T
    linear = tower.body[0] if tower.skip is None else tower.skip
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight))
        linear.bias.copy_(torch.as_tensor(-(weight @ z.mean(axis=0)), dtype=torch.float32))


def fit_embedder(params: dict[str, Any], rows: pd.DataFrame, image: np.ndarray, image_present: np.ndarray,
                 seed: int, encoder=None) -> tuple[ProductEmbedder, np.ndarray, np.ndarray, np.ndarray]:
    """Fit the embedder on a catalogue's rows (no labels): returns it, the text inputs, text_present and the
    fused embeddings of every row."""
    embedder = ProductEmbedder(params=dict(params), text_dim=0, linear=False)
    embedder.fit_text(rows, seed)
    text, text_present = embedder.text_inputs(rows, encoder)
    embedder.text_dim = text.shape[1]
    both = np.flatnonzero((image_present > 0) & (text_present > 0))
    embedder.linear = len(both) < params["min_pairs"]
    if embedder.linear:
        log.warning("product_embed: %d products with both an image and a text (< min_pairs %d): towers are PCA "
                    "projections, not trained", len(both), params["min_pairs"])
    net = _started_net(embedder, params, image, image_present, text, text_present, seed)
    if not embedder.linear:
        embedder.history = _train(net, image[both], text[both], params, seed)
    embedder.state = copy.deepcopy(net.state_dict())
    fused = embedder.embed(image, image_present, text, text_present)
    return embedder, text, text_present, fused


def _started_net(embedder: ProductEmbedder, params: dict[str, Any], image: np.ndarray, image_present: np.ndarray,
                 text: np.ndarray, text_present: np.ndarray, seed: int) -> FusionNet:
    """A new fusion net whose towers are standardised on the rows that have their side and whose linear layers
    start as that side's PCA (label-free: every row's inputs, no label)."""
    torch.manual_seed(seed)
    net = FusionNet(embedder.text_dim, params["dim"], params["hidden"], params["dropout"], embedder.linear,
                    params["image_weight"])
    for tower, x, present in ((net.image, image, image_present), (net.text, text, text_present)):
        rows = np.flatnonzero(present > 0)
        if len(rows) > 1:
            _start_tower(tower, x[rows], params["dim"])
    return net


def _train(net: FusionNet, image: np.ndarray, text: np.ndarray, params: dict[str, Any], seed: int,
           heads: list["LabelHead"] | None = None) -> list[float]:
    """CLIP-style training on matching rows, plus each supervised head's weighted cross-entropy on the fused
    embedding when ``heads`` are given; returns the mean loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    xi, xt = torch.as_tensor(image, dtype=torch.float32), torch.as_tensor(text, dtype=torch.float32)
    heads = heads or []
    layers = nn.ModuleList([nn.Linear(params["dim"], h.n_classes) for h in heads])
    optimiser = torch.optim.AdamW(list(net.parameters()) + list(layers.parameters()), lr=params["lr"],
                                  weight_decay=params["weight_decay"])
    epochs, batch = params["epochs"], min(params["batch_size"], len(xi))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    history = []
    noise = params["input_noise"]
    with torch_threads(params["num_threads"] or None):
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(xi), generator=generator)
            total, steps = 0.0, 0
            for s in range(0, len(order) - batch + 1, batch):  # full batches: the loss needs negatives
                idx = order[s:s + batch]
                bi, bt = xi[idx], xt[idx]
                if noise:
                    bi = bi + noise * bi.std(0, keepdim=True) * torch.randn(bi.shape, generator=generator)
                    bt = bt + noise * bt.std(0, keepdim=True) * torch.randn(bt.shape, generator=generator)
                zi, zt = net.towers(bi, bt)
                loss = clip_loss(zi, zt, net.log_temperature)
                if heads:
                    fused = net.fuse(zi, zt)
                    for head, layer in zip(heads, layers):
                        y = head.codes[idx]
                        if bool((y >= 0).any()):  # -1: the row has no such label
                            loss = loss + params["head_weight"] / len(heads) * nn.functional.cross_entropy(
                                layer(fused) * HEAD_SCALE, y, weight=head.weights, ignore_index=-1)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total, steps = total + float(loss.detach()), steps + 1
            scheduler.step()
            history.append(total / max(1, steps))
        net.eval()
    log.info("product_embed: contrastive loss %.3f -> %.3f over %d epochs on %d pairs", history[0], history[-1],
             epochs, len(xi))
    return history


def supervised_embedder(embedder: ProductEmbedder, image: np.ndarray, image_present: np.ndarray, text: np.ndarray,
                        text_present: np.ndarray, labels: dict[str, tuple[np.ndarray, int]], rows: np.ndarray,
                        seed: int, head_weight: float, class_power: float) -> ProductEmbedder | None:
    """The fusion net retrained with one softmax head per label column on the rows ``rows`` only (their codes in
    ``labels[name] = (codes of every row, -1 where missing; number of classes)``), beside the contrastive loss.
    The text featurisers are the label-free embedder's. None when the towers cannot be trained (too few products
    with an image and a text, as on a titles-only catalogue).

    Reads labels: a proxy figure of a row may only use an embedder fitted without that row (nested folds)."""
    # at least four steps an epoch: the heads need updates that a one-batch epoch of a small catalogue lacks
    params = {**embedder.params, "head_weight": head_weight,
              "batch_size": min(embedder.params["batch_size"], max(64, len(rows) // 4))}
    both = np.flatnonzero((image_present > 0) & (text_present > 0))
    train = np.intersect1d(both, rows)
    if embedder.linear or len(train) < params["min_pairs"]:
        return None
    net = _started_net(embedder, params, image, image_present, text, text_present, seed)
    heads = [LabelHead.of(codes[train], n_classes, class_power) for codes, n_classes in labels.values()]
    history = _train(net, image[train], text[train], params, seed, heads)
    out = copy.copy(embedder)
    out.state, out.history = copy.deepcopy(net.state_dict()), history
    return out
