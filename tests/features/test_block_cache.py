"""BlockCache(hold=False): built blocks are read back from the store when asked, not held in memory."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmstack.data import avito
from mmstack.features.base import BlockCache
from mmstack.features.registry import make_block
from mmstack.store import Store


def test_blocks_not_held_are_read_back_equal(tiny_avito_dir, tmp_path):
    data = avito.load(tiny_avito_dir)
    blocks = {}

    def resolve(name):
        return blocks.setdefault(name, make_block(name, {}))

    held = BlockCache(data, Store(tmp_path / "held"), seed=0)
    spilled = BlockCache(data, Store(tmp_path / "spilled"), seed=0, hold=False)
    for name in ("basic", "text_stats"):
        built = spilled.get(resolve(name), resolve)
        pd.testing.assert_frame_equal(built.dense, held.get(resolve(name), resolve).dense)
    # what the spilled cache keeps is the store folder; every access reads a fresh copy back
    assert all(isinstance(v, Path) for v in spilled._shared.outputs.values())
    assert all(not isinstance(v, Path) for v in held._shared.outputs.values())
    first, second = spilled.outputs["basic"], spilled.outputs["basic"]
    assert first is not second
    pd.testing.assert_frame_equal(first.dense, held.outputs["basic"].dense)
    assert first.categorical == held.outputs["basic"].categorical
    assert sorted(spilled.outputs) == ["basic", "text_stats"] and "tabular" not in spilled.outputs
    # a cache for a target shares the spilled blocks and spills its own too
    assert spilled.for_target(None).hold is False
