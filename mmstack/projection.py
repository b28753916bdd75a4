"""One PCA for every place that projects embeddings (image features, image tokens, label and query spaces, text
embeddings, the graph net's messages), and one row normaliser.

Axes come from the eigendecomposition of a float64 covariance accumulated in row chunks (no float64 copy of a
large float32 matrix), sign-fixed so results are deterministic, and zeroed beyond the data's rank so that they
project to 0 rather than to amplified noise.
"""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def principal_axes(cov: np.ndarray, k: int, rel_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` eigenvalues and unit axes of a covariance matrix, deterministic and rank-safe.

    Axes are sign-fixed (largest loading positive); an axis whose eigenvalue is below ``rel_tol`` times the largest
    (beyond the data's rank) is zeroed, so that it projects to 0 rather than to amplified noise.
    """
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:k]
    values, comps = values[order], vectors[:, order]
    comps = comps * np.where(values > rel_tol * max(values.max(initial=0.0), 1e-30), 1.0, 0.0)
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(comps.shape[1])])
    return values, comps * np.where(signs == 0, 1.0, signs)


def _rows64(x: np.ndarray, rows, columns: np.ndarray | None) -> np.ndarray:
    """``x[rows]`` (only ``columns`` when given) in float64."""
    part = x[rows]
    return np.asarray(part if columns is None else part[:, columns], np.float64)


def pca_fit(x: np.ndarray, rows: np.ndarray, k: int, rel_tol: float = 1e-10, chunk: int = 4096,
            columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top-``k`` variances and axes (dim x k) of ``x[rows]`` (its ``columns`` when given, without a copy of
    them), accumulated in float64 over row chunks."""
    dim = x.shape[1] if columns is None else len(columns)
    mean = np.zeros(dim)
    for s in range(0, len(rows), chunk):
        mean += _rows64(x, rows[s:s + chunk], columns).sum(axis=0)
    mean /= max(1, len(rows))
    cov = np.zeros((dim, dim))
    for s in range(0, len(rows), chunk):
        c = _rows64(x, rows[s:s + chunk], columns) - mean
        cov += c.T @ c
    values, axes = principal_axes(cov / max(1, len(rows)), k, rel_tol)
    return mean, values, axes


def pca_projection(x: np.ndarray, rows: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Exact PCA of ``x[rows]`` to ``k`` float32 columns, computed in row chunks."""
    mean, _, axes = pca_fit(x, rows, k, chunk=chunk)
    out = np.empty((len(rows), k), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = (np.asarray(x[rows[s:s + chunk]], np.float64) - mean) @ axes
    return out


def whitened(x: np.ndarray, fit_rows: np.ndarray, k: int, rel_tol: float = 1e-8, chunk: int = 65_536,
             columns: np.ndarray | None = None, n_out: int | None = None, dtype=np.float64) -> np.ndarray:
    """All rows of ``x`` (its ``columns`` when given) projected on the top-``k`` axes of ``x[fit_rows]`` and scaled
    to unit variance (axes beyond the rank give 0), computed in float64 ``chunk`` rows at a time (no float64 copy
    of all of ``x``) and returned as ``dtype``. With ``n_out`` rows, those after ``x``'s own are the projection of
    an all-zero row (rows that have no values, without a block of zeros to project)."""
    mean, values, axes = pca_fit(x, fit_rows, k, rel_tol, columns=columns)
    scale = np.sqrt(np.clip(values, 0, None))
    projection = axes * np.where(scale > 0, 1.0 / np.maximum(scale, 1e-30), 0.0)
    out = np.empty((len(x) if n_out is None else n_out, projection.shape[1]), dtype)
    for s in range(0, len(x), chunk):
        part = _rows64(x, slice(s, s + chunk), columns)
        out[s:s + len(part)] = (part - mean) @ projection
    out[len(x):] = -mean @ projection
    return out
