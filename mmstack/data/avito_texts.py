"""Titles and descriptions of generated Avito listings, drawn for all rows at once (numpy draws, polars strings).

A description is its lines joined by a newline (70%) or a space: "<title>. <condition>", a size line (clothes) or
dimensions (20% of the rest), a price line (35% of priced listings), the deal phrase, 0-3 filler phrases (15%: 4
or more) and a phone number (15%). The text's planted effect is the condition's and the deal's effect plus 0.08
per line beyond three; a listing without a description gets its urgency's effect (when the title shouts it) minus
0.4. Rows are drawn in chunks so that the per-row filler shuffles stay small at full size.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from .avito_vocab import CONDITION_PHRASES, DEAL_PHRASES, FILLER_PHRASES

CLOTHES_SIZES = ["42", "44", "46", "48", "50", "110", "116", "128"]
URGENT = "Срочно!"
CHUNK_ROWS = 250_000


def _text(values) -> pl.Series:
    return pl.Series(values, dtype=pl.String)


def _pick(options, index: np.ndarray) -> pl.Series:
    """``options[index]`` as strings (gathered from the few options, not built row by row)."""
    return _text(list(options)).gather(index)


def _where(mask: np.ndarray, text: pl.Series) -> pl.Series:
    """``text`` where ``mask`` holds, null elsewhere (a line that is left out)."""
    return pl.select(pl.when(pl.Series(mask)).then(text)).to_series()


def capitalised(titles: pl.Series) -> pl.Series:
    return pl.select(titles.str.slice(0, 1).str.to_uppercase() + titles.str.slice(1)).to_series()


def draw_titles(rng: np.random.Generator, names: np.ndarray, product: np.ndarray,
                source: np.ndarray) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Titles (the product's name, "СРОЧНО! " first for 40% of urgent listings, capitalised; a repost takes its
    ``source`` row's title) with the condition and deal phrase indexes drawn for every row."""
    n = len(product)
    cond = rng.integers(0, len(CONDITION_PHRASES), n)
    deal = rng.integers(0, len(DEAL_PHRASES), n)
    shout = (deal == [p for p, _ in DEAL_PHRASES].index(URGENT)) & (rng.random(n) < 0.4)
    titles = pl.select(pl.when(pl.Series(shout)).then(pl.lit("СРОЧНО! ")).otherwise(pl.lit(""))
                       + _pick(names, product)).to_series()
    titles = capitalised(titles).gather(source)
    return titles, cond, deal


def draw_descriptions(rng: np.random.Generator, titles: pl.Series, cond: np.ndarray, deal: np.ndarray,
                      clothes: np.ndarray, price: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    """Descriptions (without the missing ones) and their number of lines, for the rows given."""
    n = len(titles)
    fillers = FILLER_PHRASES
    sized = rng.random(n) < 0.2
    dims = rng.integers(40, 220, (n, 2))
    priced = ~np.isnan(price) & (rng.random(n) < 0.35)
    many = rng.random(n) >= 0.85
    n_fill = np.where(many, rng.integers(4, len(fillers) + 1, n), rng.integers(0, 4, n))
    # a shuffle of the fillers per row (the first n_fill are said): argsort of random keys
    order = np.argsort(rng.random((n, len(fillers)), dtype=np.float32), axis=1)
    phone = rng.random(n) < 0.15
    digits = np.stack([rng.integers(10, 99, n), rng.integers(100, 999, n), rng.integers(10, 99, n),
                       rng.integers(10, 99, n)], axis=1)
    newline = rng.random(n) < 0.7

    said = deal != [p for p, _ in DEAL_PHRASES].index("")
    size_line = pl.select(pl.when(pl.Series(clothes)).then(
        pl.lit("Размер ") + _pick(CLOTHES_SIZES, rng.integers(0, len(CLOTHES_SIZES), n)) + pl.lit("."))
        .when(pl.Series(sized)).then(pl.format("Размеры {}х{} см.", pl.Series(dims[:, 0]), pl.Series(dims[:, 1])))
    ).to_series()
    price_line = _where(priced, pl.format("Цена {} руб.", pl.Series(np.nan_to_num(price)).cast(pl.Int64)))
    phone_line = _where(phone, pl.format("Тел. 8-9{}-{}-{}-{}", *(pl.Series(digits[:, k]) for k in range(4))))
    lines = [titles + ". " + _pick([p for p, _ in CONDITION_PHRASES], cond), size_line, price_line,
             _where(said, _pick([p for p, _ in DEAL_PHRASES], deal))]
    lines += [_where(n_fill > k, _pick(fillers, order[:, k])) for k in range(int(n_fill.max(initial=0)))]
    lines.append(phone_line)
    joined = pl.select(pl.when(pl.Series(newline)).then(pl.concat_str(lines, separator="\n", ignore_nulls=True))
                       .otherwise(pl.concat_str(lines, separator=" ", ignore_nulls=True))).to_series()
    n_lines = 1 + (clothes | sized) + priced + said + n_fill + phone
    return joined, n_lines


def draw_texts(rng: np.random.Generator, names: np.ndarray, product: np.ndarray, source: np.ndarray,
               clothes: np.ndarray, price: np.ndarray,
               no_desc: np.ndarray) -> tuple[list[str], list[str | None], np.ndarray]:
    """Titles, descriptions (None where ``no_desc``) and the planted text effect of every row.

    ``names``: the products' names, ``product``: each row's product; ``source``: the row whose title a row shows
    (itself, or the first listing of a repost chain); ``clothes``: rows whose category wears sizes; ``price``: NaN where none is given."""
    n = len(product)
    titles, cond, deal = draw_titles(rng, names, product, source)
    cond_effect = np.array([e for _, e in CONDITION_PHRASES])[cond]
    deal_effect = np.array([e for _, e in DEAL_PHRASES])[deal]
    shouted = titles.str.contains("СРОЧНО", literal=True).to_numpy()
    effect = deal_effect * shouted - 0.4
    full = np.full(n, None, dtype=object)
    for start in range(0, n, CHUNK_ROWS):
        rows = np.arange(start, min(n, start + CHUNK_ROWS))
        rows = rows[~no_desc[rows]]
        text, n_lines = draw_descriptions(rng, titles.gather(rows), cond[rows], deal[rows], clothes[rows],
                                          price[rows])
        effect[rows] = cond_effect[rows] + deal_effect[rows] + 0.08 * (n_lines - 3)
        full[rows] = text.to_numpy()
    return titles.to_list(), full.tolist(), effect
