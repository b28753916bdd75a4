"""The fusion net's shape: towers whose linear path starts as their side's PCA, and the image side weighted in the
fused sum. Synthetic tower inputs, no encoder."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from mmstack.products import fusion as F
from mmstack.projection import pca_fit

PARAMS = dict(dim=16, hidden=64, dropout=0.2, input_noise=0.1, epochs=15, batch_size=128, lr=1e-3,
              weight_decay=1e-4, num_threads=1, image_weight=0.5)


def shared_factor_inputs(n: int = 800, text_dim: int = 48, seed: int = 0):
    """Image and text inputs that share a 4-class factor (one standardised axis each, among many noise axes)."""
    rng = np.random.default_rng(seed)
    shared = rng.integers(0, 4, n)
    image = rng.normal(size=(n, F.IMAGE_DIM)).astype(np.float32)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    image[:, :4] += 3 * np.eye(4)[shared]
    text[:, :4] += 3 * np.eye(4)[shared]
    return image, text, shared


def fused(net: F.FusionNet, image: np.ndarray, text: np.ndarray, image_present: np.ndarray) -> np.ndarray:
    ones = torch.ones(len(image), 1)
    with torch.no_grad():
        return net(torch.as_tensor(image), torch.as_tensor(image_present, dtype=torch.float32).reshape(-1, 1),
                   torch.as_tensor(text), ones).numpy()


def test_linear_path_starts_as_the_pca_of_the_standardised_side():
    image, text, _ = shared_factor_inputs(n=300)
    embedder = F.ProductEmbedder(params=PARAMS, text_dim=text.shape[1], linear=False)
    ones = np.ones(len(image), np.float32)
    net = F._started_net(embedder, PARAMS, image, ones, text, ones, seed=0)
    z = (text - text.mean(0)) / text.std(0)
    _, _, axes = pca_fit(z, np.arange(len(z)), PARAMS["dim"])
    with torch.no_grad():
        path = net.text.skip((torch.as_tensor(text) - net.text.mean) * net.text.scale).numpy()
    np.testing.assert_allclose(path, (z - z.mean(0)) @ axes, atol=1e-3)
    assert np.allclose(path.mean(0), 0, atol=1e-4) and path.var(0)[0] > path.var(0)[-1]
    # a PCA fallback tower (too few pairs to train) is that one linear layer and nothing else
    fallback = F._started_net(F.ProductEmbedder(params=PARAMS, text_dim=text.shape[1], linear=True), PARAMS,
                              image, ones, text, ones, seed=0)
    assert fallback.text.skip is None and len(fallback.text.body) == 1


def test_fused_sum_weights_the_image_side():
    image, text, _ = shared_factor_inputs(n=50)
    net = F._started_net(F.ProductEmbedder(params=PARAMS, text_dim=text.shape[1], linear=False), PARAMS,
                         image, np.ones(50, np.float32), text, np.ones(50, np.float32), seed=0).eval()
    with torch.no_grad():
        zi, zt = net.towers(torch.as_tensor(image), torch.as_tensor(text))
    expected = (0.5 * zi + zt).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(fused(net, image, text, np.ones(50)), expected, atol=1e-5)
    # without an image the product is its text side alone
    np.testing.assert_allclose(fused(net, image, text, np.zeros(50)), zt.numpy(), atol=1e-5)


def test_linear_path_keeps_the_shared_factor_a_small_catalogue_would_lose():
    """800 products, 1280 image axes of noise: the MLP alone fits the noise and the factor both sides share is
    nearly lost (about 0.53 accuracy for 4 classes); with the PCA-started linear path it survives training."""
    image, text, shared = shared_factor_inputs()
    ones = np.ones(len(image), np.float32)
    accuracy = {}
    for with_path in (True, False):
        embedder = F.ProductEmbedder(params=PARAMS, text_dim=text.shape[1], linear=False)
        net = F._started_net(embedder, PARAMS, image, ones, text, ones, seed=0)
        if not with_path:
            net.image.skip = net.text.skip = None
        F._train(net, image, text, PARAMS, seed=0)
        z = fused(net, image, text, ones)
        accuracy[with_path] = cross_val_score(LogisticRegression(max_iter=2000), z, shared, cv=5).mean()
    assert accuracy[True] > 0.75 and accuracy[True] > accuracy[False] + 0.15, accuracy


def test_image_weight_outside_its_range_is_a_config_error():
    import pytest

    from mmstack.errors import ConfigError
    from mmstack.features.product_embed import ProductEmbedBlock

    assert ProductEmbedBlock({"image_weight": 0.0}).params["image_weight"] == 0.0
    for bad in (-1, 11, "heavy"):
        with pytest.raises((ConfigError, ValueError), match="image_weight"):
            ProductEmbedBlock({"image_weight": bad})
