"""One training loop for the PyTorch level-1 nets: seeded, early stopping on the fold's validation part by the
target's metric (in its direction), a progress bar per epoch with the validation score, best state kept."""
from __future__ import annotations

import copy
import logging
import random
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..metrics import Metric
from ..threads import torch_threads
from .heads import Head

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_for(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


@torch.inference_mode()
def predict_batches(net: nn.Module, head: Head, tensors: Sequence[torch.Tensor], batch_size: int,
                    device: torch.device) -> np.ndarray:
    """Predictions (rows x outputs) of ``net``'s logits through ``head``."""
    net.eval()
    n = len(tensors[0])
    out = [head.output(net(*(t[i:i + batch_size].to(device) for t in tensors))).float().cpu()
           for i in range(0, n, batch_size)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, head.n_outputs))


def train_net(net: nn.Module, head: Head, metric: Metric, train: Sequence[torch.Tensor], y_train: np.ndarray,
              valid: Sequence[torch.Tensor], y_valid: np.ndarray, *, epochs: int, batch_size: int, lr: float,
              weight_decay: float, patience: int, seed: int, desc: str = "net",
              device: torch.device | None = None, out_of_time=lambda: False) -> nn.Module:
    """Fit ``net`` (which maps a batch of ``train`` tensors to logits for ``head``); returns it at its best
    validation epoch by ``metric``."""
    seed_everything(seed)
    device = device or device_for()
    net.to(device)
    yt = head.label_tensor(y_train)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    generator = torch.Generator().manual_seed(seed)
    use_amp = device.type == "cuda"
    best, best_state, waited = np.inf, copy.deepcopy(net.state_dict()), 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(yt), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            batch = [t[idx].to(device) for t in train]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(*batch)
            loss_value = head.loss(logits, yt[idx].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss_value.backward()
            optimiser.step()
        scheduler.step()
        score = metric(y_valid, predict_batches(net, head, valid, 4 * batch_size, device))
        bar.set_postfix({f"valid_{metric.name}": f"{score:.5f}"})
        log.debug("%s epoch %d valid %s %.5f", desc, epoch + 1, metric.name, score)
        if metric.loss(score) < best - 1e-6:
            best, best_state, waited = metric.loss(score), copy.deepcopy(net.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
        if out_of_time():  # a time limit's fold deadline: keep the best epoch so far
            break
    net.load_state_dict(best_state)
    return net.cpu()


def fit_with_params(net: nn.Module, head: Head, metric: Metric, params: dict, seed: int,
                    train: Sequence[torch.Tensor], y_train: np.ndarray, valid: Sequence[torch.Tensor],
                    y_valid: np.ndarray, desc: str, out_of_time=lambda: False) -> nn.Module:
    """:func:`train_net` with a net model's usual params (epochs, batch_size, lr, weight_decay, patience), on
    ``params['num_threads']`` CPU threads (restored after)."""
    with torch_threads(params["num_threads"]):
        return train_net(net, head, metric, train, y_train, valid, y_valid, epochs=params["epochs"],
                         batch_size=params["batch_size"], lr=params["lr"], weight_decay=params["weight_decay"],
                         patience=params["patience"], seed=seed, desc=desc, out_of_time=out_of_time)


def predict_on_device(net: nn.Module, head: Head, tensors: Sequence[torch.Tensor], num_threads: int | None,
                      batch_size: int = 1024) -> np.ndarray:
    """Predictions of a fitted net on the GPU when present (the net goes back to the CPU after)."""
    device = device_for()
    try:
        with torch_threads(num_threads):
            return predict_batches(net.to(device), head, tensors, batch_size, device)
    finally:
        net.cpu()
