"""Parts of the description service on tiny data: caption metrics, captioners (fit, save, load), object regions."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mmstack.describe.captioners import CaptionQuery, NetCaptioner, RetrievalCaptioner, detokenize, tokenize
from mmstack.describe.encode import region_stats
from mmstack.describe.metrics import bleu, cider, rouge_l


def test_metrics_reward_the_matching_caption():
    refs = [["Продаю зимнюю куртку, размер 44"], ["a dog is running on green grass", "the dog runs"]]
    same = [refs[0][0], refs[1][0]]
    other = ["велосипед горный", "two people sit at a table"]
    assert bleu(same, refs)["bleu4"] > 99 and bleu(other, refs)["bleu1"] < 20
    assert rouge_l(same, refs) == 1.0 and rouge_l(other, refs) < 0.2
    assert cider(same, refs) > cider(other, refs)


def _queries(n: int, seed: int = 0):
    fixed = np.random.default_rng(0)  # the two kinds' centres are the same for every draw
    centres = fixed.normal(size=(2, 1280)).astype(np.float32)
    text_centres = fixed.normal(size=(2, 512)).astype(np.float32)
    rng = np.random.default_rng(seed + 100)
    groups = np.arange(n) % 2
    queries = [CaptionQuery(image_vec=centres[g] + 0.1 * rng.normal(size=1280).astype(np.float32),
                            text_vec=text_centres[g] + 0.1 * rng.normal(size=512).astype(np.float32),
                            attributes=f"Название: <TITLE>\nЦена: <PRICE>\nВид: {'куртка' if g == 0 else 'велосипед'}")
               for g in groups]
    captions = ["<TITLE>, тёплая куртка. Цена <PRICE> руб." if g == 0 else "<TITLE>: горный велосипед, 21 скорость."
                for g in groups]
    return queries, captions, groups


def test_retrieval_captioner_finds_the_right_kind_and_round_trips(tmp_path):
    queries, captions, groups = _queries(40)
    originals = [c.replace("<PRICE>", str(100 + i)) for i, c in enumerate(captions)]
    model = RetrievalCaptioner.fit(queries, captions, originals, components=8)
    test, _, test_groups = _queries(6, seed=1)
    assert all(("куртка" in model.describe(q)) == (g == 0) for q, g in zip(test, test_groups))
    assert model.copy_nearest(test[0]) in originals
    model.save(tmp_path / "retrieval.npz")
    loaded = RetrievalCaptioner.load(tmp_path / "retrieval.npz")
    assert [loaded.describe(q) for q in test] == [model.describe(q) for q in test]
    assert loaded.copy_nearest(test[0]) == model.copy_nearest(test[0])


def test_caption_net_learns_two_captions(tmp_path):
    queries, captions, _ = _queries(64)
    net = NetCaptioner.fit(queries, captions, components=8, epochs=40, lr=1e-2, hidden=64, emb=32)
    test, _, test_groups = _queries(4, seed=2)
    out = net.describe_many(test)
    assert [("куртка" in t) for t in out] == [g == 0 for g in test_groups], out
    net.save(tmp_path / "net.npz")
    assert NetCaptioner.load(tmp_path / "net.npz").describe_many(test) == out


def test_tokens_round_trip():
    text = "<TITLE>, тёплая куртка. Цена <PRICE> руб."
    assert detokenize(tokenize(text)) == text


def test_region_stats_count_things_and_their_spread():
    one = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(one).ellipse((50, 30, 110, 90), fill=(200, 30, 30))
    many = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(many)
    for k, colour in enumerate([(200, 30, 30), (30, 160, 30), (30, 30, 200), (220, 200, 20)]):
        draw.rectangle((10 + 37 * k, 40, 35 + 37 * k, 80), fill=colour)
    a, b = region_stats(one), region_stats(many)
    assert a[0] == 1 and a[1] == 0
    assert b[0] == 4 and b[1] > 0.3 and b[4] == 4
