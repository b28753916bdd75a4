"""The products data layer: read the real catalogue copies and time the embedded generator.

    python benchmarks/products_data.py [--shared ../shared/data] [--rows 2000 10000] [--no-record]

For each of ``myntra/`` and ``shopee/`` under ``--shared`` (skipped when absent; read in place, never copied):
load time, rows, label columns, products with images, every image decoded, counted problems. Then
``write_products`` for each ``--rows`` into a temporary folder (one core): time, images, measured label rates.
Results go to BENCHMARKS.md (section "products-data").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def real_catalogues(shared: Path) -> list[str]:
    from mmstack.data.products import load_catalogue

    lines = ["| catalogue | rows | labels | with images | decoded | load s | decode s | problems |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("myntra", "shopee"):
        folder = shared / name
        if not folder.is_dir():
            print(f"skipped: no {folder}")
            continue
        start = time.perf_counter()
        cat = load_catalogue(folder)
        loaded = time.perf_counter() - start
        decoded = sum(cat.open_image(r, k) is not None for r in range(len(cat)) for k in range(len(cat.images[r])))
        decode_s = time.perf_counter() - start - loaded
        with_images = sum(bool(names) for names in cat.images)
        problems = ", ".join(f"{k} {v}" for k, v in sorted(cat.problems.items())) or "none"
        lines.append(f"| {name} | {len(cat)} | {', '.join(cat.label_columns)} | {with_images} | {decoded} | "
                     f"{loaded:.1f} | {decode_s:.1f} | {problems} |")
        print(lines[-1])
    return lines


def generator(rows_list: list[int]) -> list[str]:
    from mmstack.data.products import load_catalogue
    from mmstack.data.products_synth import write_products

    lines = ["| rows | seconds | images | isadult | grouped rows | group sizes | empty group | empty category |",
             "|---|---|---|---|---|---|---|---|"]
    for rows in rows_list:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            counts = write_products(Path(tmp) / "p", rows=rows, seed=42, n_jobs=1)
            took = time.perf_counter() - start
            cat = load_catalogue(Path(tmp) / "p")
        lab = cat.labels
        sizes = lab["group"].value_counts()
        grouped = float(lab["group"].map(sizes).gt(1).sum() / lab["group"].notna().sum())
        lines.append(f"| {rows} | {took:.1f} | {counts['images']} | {np.nanmean(lab['isadult']):.3f} | "
                     f"{grouped:.3f} | {sizes[sizes > 1].min()}-{sizes.max()} | {lab['group'].isna().mean():.3f} | "
                     f"{lab['category'].isna().mean():.3f} |")
        print(lines[-1])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rows", type=int, nargs="*", default=[2000, 10000])
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    body = ["## Products data layer", "",
            "`load_catalogue` on the real catalogue copies (every image decoded):", "", *real_catalogues(args.shared),
            "", "`write_products` (seed 42, 96 px images, one core), read back with `load_catalogue` "
            "(rates over rows with the label; grouped rows among rows with a group):", "", *generator(args.rows)]
    if not args.no_record:
        write_section("products-data", "\n".join(body))


if __name__ == "__main__":
    main()
