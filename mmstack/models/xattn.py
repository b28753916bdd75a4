"""Image-text cross-attention fusion net over the token blocks, with the MLP's tabular part.

Per listing: word tokens (``text_tokens``: trainable embeddings + position + title/description segment) and image
patch tokens (``image_tokens``: LayerNorm + linear + position). Text tokens attend to the image patches and the
patches to the text (``nn.MultiheadAttention``, each with a residual and LayerNorm); each side is mean-pooled over
its valid tokens. The two pooled vectors join the tabular part (standardised numbers + categorical embeddings, as in
:mod:`mmstack.models.mlp`) in a small head whose output follows the target (:mod:`mmstack.models.heads`).

Missing modalities are masked, never zero-filled: padded words and the patches of a listing without an image are
left out of the attention keys (``key_padding_mask``) and of the pooling. Every key set has one learned *null*
token that is always visible, so a listing without an image (or text) still has a defined attention output, and a
side with no valid token pools to a learned "missing" vector. Changing masked token values changes nothing.

Tokens are read in :meth:`CrossAttentionModel.bind` from ``inputs.extras`` and picked by row id (the index of the
model's frames). Either token block may be left out of the model's blocks; that modality is then missing for all
rows. Training: :func:`mmstack.models.torch_training.train_net` (seeded, early stopping on the fold's validation
part, a progress bar per epoch with the validation RMSE, bf16 autocast and CUDA when present).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..targets import Target
from .base import Level1Model, ModelInput
from .heads import Head
from .registry import register
from .tabular_input import CategoryEmbeddings, TabularScaler
from .torch_training import fit_with_params, predict_on_device, seed_everything


def masked_mean(x: torch.Tensor, valid: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, W) over positions where ``valid`` (B, T) holds; ``missing`` (W,) where none does.

    ``torch.where`` rather than a multiplication by the mask: a masked value, even inf or NaN, cannot leak in.
    """
    keep = valid.unsqueeze(-1)
    total = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    count = valid.sum(dim=1, keepdim=True)
    return torch.where(count > 0, total / count.clamp_min(1).to(x.dtype), missing.to(x.dtype))


class CrossAttentionNet(nn.Module):
    """Text <-> image cross-attention with masked pooling, fused with a tabular MLP; returns the head's logits."""

    def __init__(self, n_numeric: int, cardinality: list[int], vocab_size: int, text_len: int, n_patches: int,
                 token_dim: int, head: Head, width: int = 32, heads: int = 2, hidden: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        self.inputs = CategoryEmbeddings(cardinality)
        tab_in = n_numeric + self.inputs.width
        self.tabular = nn.Sequential(nn.Linear(tab_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                     nn.Dropout(dropout))
        self.word = nn.Embedding(vocab_size, width, padding_idx=0)
        self.text_position = nn.Embedding(text_len, width)
        self.segment = nn.Embedding(2, width)  # title, description (after the [SEP] id 2)
        self.patch_norm = nn.LayerNorm(token_dim)
        self.patch = nn.Linear(token_dim, width)
        self.image_position = nn.Embedding(n_patches, width)
        self.null_image = nn.Parameter(torch.zeros(1, 1, width))
        self.null_text = nn.Parameter(torch.zeros(1, 1, width))
        self.text_to_image = nn.MultiheadAttention(width, heads, batch_first=True)
        self.image_to_text = nn.MultiheadAttention(width, heads, batch_first=True)
        self.text_norm = nn.LayerNorm(width)
        self.image_norm = nn.LayerNorm(width)
        self.missing_text = nn.Parameter(torch.zeros(width))
        self.missing_image = nn.Parameter(torch.zeros(width))
        self.head = nn.Sequential(nn.Linear(hidden + 2 * width, hidden // 2), nn.ReLU(), nn.Dropout(dropout),
                                  head.layer(hidden // 2))
        with torch.no_grad():
            nn.init.normal_(self.word.weight, std=0.1)
            self.word.weight[0].zero_()

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
                image_tokens: torch.Tensor, image_present: torch.Tensor) -> torch.Tensor:
        tab = self.tabular(self.inputs(numeric, codes))
        batch = len(numeric)
        # only as many word positions as the longest text in the batch: padding beyond it is masked anyway
        used = int(text_mask.any(dim=0).nonzero().max()) + 1 if bool(text_mask.any()) else 1
        ids, text_valid = text_ids[:, :used].long(), text_mask[:, :used]
        segment = (torch.cumsum(((ids == 2) & text_valid).long(), dim=1) > 0).long()
        positions = torch.arange(used, device=ids.device)
        text = self.word(ids) + self.text_position(positions) + self.segment(segment)
        patches = torch.arange(image_tokens.shape[1], device=ids.device)
        image = self.patch(self.patch_norm(image_tokens.float())) + self.image_position(patches)
        image_valid = image_present.bool().unsqueeze(1).expand(-1, image_tokens.shape[1])
        always = torch.zeros(batch, 1, dtype=torch.bool, device=ids.device)
        image_keys = torch.cat([self.null_image.expand(batch, -1, -1).to(image.dtype), image], dim=1)
        text_keys = torch.cat([self.null_text.expand(batch, -1, -1).to(text.dtype), text], dim=1)
        attended, _ = self.text_to_image(text, image_keys, image_keys, need_weights=False,
                                         key_padding_mask=torch.cat([always, ~image_valid], dim=1))
        text_out = self.text_norm(text + attended)
        attended, _ = self.image_to_text(image, text_keys, text_keys, need_weights=False,
                                         key_padding_mask=torch.cat([always, ~text_valid], dim=1))
        image_out = self.image_norm(image + attended)
        pooled = [masked_mean(text_out, text_valid, self.missing_text),
                  masked_mean(image_out, image_valid, self.missing_image)]
        return self.head(torch.cat([tab, *pooled], dim=1))


@register
class CrossAttentionModel(Level1Model):
    """``xattn``: the cross-attention fusion net on ``text_tokens`` + ``image_tokens`` + the dense blocks."""

    key = "xattn"
    version = "2"
    row_tables = ("_tokens",)
    requires_blocks = ("text_tokens", "image_tokens")
    default_params = {
        "hidden": 128,  # tabular width; the head has hidden // 2 units
        "width": 32,  # token width of both modalities and of the attention
        "heads": 2,
        "dropout": 0.2,
        "epochs": 12,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 0.05,  # AdamW's decoupled decay: the net overfits 8k rows within a few epochs
        "patience": 3,
        "loss": "mse",  # regression: or "bce" on a 0..1 target; classification uses cross-entropy
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        # CPU threads while fitting (restored after). One: on 2 shared cores two threads ran up to 50x slower
        # whenever the other core was busy, and one is barely slower on an idle machine for a net this small
        "num_threads": 1,
    }

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42, target: Target | None = None):
        super().__init__(params, seed, target)
        if self.params["width"] % self.params["heads"]:
            raise ConfigError("models.xattn: width must be a multiple of heads")
        self._tokens: dict[str, torch.Tensor] | None = None
        self._vocab = 3

    def bind(self, inputs: ModelInput) -> None:
        n = inputs.X.shape[0]
        text, image = inputs.extras.get("text_tokens"), inputs.extras.get("image_tokens")
        if text is None and image is None:
            raise ConfigError("models.xattn needs the text_tokens and/or image_tokens block in its blocks")
        if text is not None:
            ids, mask = np.asarray(text["ids"], dtype=np.int32), np.asarray(text["mask"], dtype=bool)
            vocab = len(text["vocab"])
        else:  # no text block: every row's text is missing (masked)
            ids, mask, vocab = np.zeros((n, 1), np.int32), np.zeros((n, 1), bool), 3
        if image is not None:
            tokens, present = np.asarray(image["tokens"], dtype=np.float16), np.asarray(image["present"], dtype=bool)
        else:
            tokens, present = np.zeros((n, 1, 1), np.float16), np.zeros(n, bool)
        if len(ids) != n or len(tokens) != n:
            raise ConfigError(f"models.xattn: token blocks have {len(ids)}/{len(tokens)} rows, the matrix {n}")
        self._tokens = {"ids": torch.from_numpy(ids), "mask": torch.from_numpy(mask),
                        "tokens": torch.from_numpy(tokens), "present": torch.from_numpy(present)}
        self._vocab = vocab

    def _tensors(self, scaler: TabularScaler, X) -> list[torch.Tensor]:
        if self._tokens is None:
            raise RuntimeError("xattn: bind(inputs) must be called before fitting or predicting")
        rows = torch.from_numpy(np.ascontiguousarray(X.index.to_numpy(dtype=np.int64)))
        t = self._tokens
        return [*scaler.transform(X), t["ids"][rows], t["mask"][rows], t["tokens"][rows], t["present"][rows]]

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        p = self.params
        scaler = TabularScaler.fit(X_train, categorical)
        head = Head(self.target, y_train, p["loss"], p["class_weight"])
        seed_everything(self.seed)  # before the weights are initialised
        net = CrossAttentionNet(len(scaler.numeric), scaler.cardinality, self._vocab,
                                self._tokens["ids"].shape[1], self._tokens["tokens"].shape[1],
                                self._tokens["tokens"].shape[2], head, width=p["width"], heads=p["heads"],
                                hidden=p["hidden"], dropout=p["dropout"])
        net = fit_with_params(net, head, self.target.metric, p, self.seed, self._tensors(scaler, X_train), y_train,
                              self._tensors(scaler, X_valid), y_valid, desc="xattn", out_of_time=self.out_of_time)
        return scaler, head, net

    def predict(self, fitted, X) -> np.ndarray:
        scaler, head, net = fitted
        return predict_on_device(net, head, self._tensors(scaler, X), self.params["num_threads"], 1024)
