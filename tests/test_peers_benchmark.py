"""benchmarks/peers.py's own parts: the grouped outer split, the timed process and the table's goal column."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402


def test_outer_split_holds_out_whole_groups():
    groups = np.repeat([f"u{i}" for i in range(50)], 4)
    (fit, held), = peers.outer_splits(groups, 1)
    assert len(held) == 40 and not set(groups[fit]) & set(groups[held])
    folds = peers.outer_splits(groups, 5)
    assert len(folds) == 5 and sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(200))


def test_timed_process_reports_seconds_memory_and_status(tmp_path):
    done = peers.run_timed([sys.executable, "-c", "b = bytearray(60_000_000); print('ok')"], tmp_path / "log")
    assert done.returncode == 0 and "ok" in done.tail and done.peak_mb > 55 and done.seconds > 0
    failed = peers.run_timed([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log2")
    assert failed.returncode == 3


def test_table_marks_the_goal():
    case = {"case": "c", "metric": "RMSE", "budget": 60, "outer": 1, "n_fit": 80, "n_held": 20,
            "kit": 0.20, "ag": 0.21, "kit_s": 50, "ag_s": 60, "kit_mb": 1, "ag_mb": 1}
    met, missed = peers.table([case])[2], peers.table([{**case, "kit": 0.209}])[2]
    assert met.endswith("| yes |") and "0.952" in met and missed.endswith("| no |")
    slow = peers.table([{**case, "kit_s": 61}])[2]
    assert slow.endswith("| no |")


def test_kit_predictions_follow_the_held_out_rows(tmp_path):
    import pandas as pd
    import pytest

    latest = tmp_path / "submissions" / "latest"
    latest.mkdir(parents=True)
    pd.DataFrame({"image": ["a", "b", "a"], "query_id": ["q1", "q1", "q2"], "relevance": [0.1, 0.2, 0.3]}).to_csv(
        latest / "submission.csv", index=False)
    held = pd.DataFrame({"image": ["a", "a", "b"], "query_id": ["q2", "q1", "q1"]})
    assert peers.kit_predictions(tmp_path, ["image", "query_id"], held, "relevance").tolist() == [0.3, 0.1, 0.2]
    with pytest.raises(SystemExit, match="lacks 1 held-out"):
        peers.kit_predictions(tmp_path, ["image", "query_id"], pd.concat([held, held.assign(image="c").head(1)]),
                              "relevance")


def test_flickr_outer_fold_is_a_relevance_folder_without_the_held_out_scores(tmp_path):
    import pandas as pd

    from mmstack.data import relevance

    src = tmp_path / "src"
    (src / "train_images").mkdir(parents=True)
    images = [f"{i}00_x.jpg" for i in range(6)]
    pairs = pd.DataFrame({"image": images * 2, "query_id": [f"{im}#0" for im in images] * 2,
                          "query_text": [f"a dog number {i}" for i in range(12)]})
    pairs["query_id"] = pairs["query_id"].where(pairs.index < 6, pairs["query_id"].str.replace("#0", "#1"))
    pairs.to_csv(src / "train_dataset.csv", index=False)
    scores = pairs[["image", "query_id"]].assign(e1=1 + pairs.index % 4, e2=4, e3=1)
    scores.to_csv(src / "ExpertAnnotations.tsv", sep="\t", header=False, index=False)
    pairs[["image", "query_id"]].assign(s=0.5, y=1, n=1).to_csv(src / "CrowdAnnotations.tsv", sep="\t",
                                                                 header=False, index=False)
    (fit_pos, held_pos), = peers.outer_splits(pairs["image"].to_numpy(), 1)
    inp = tmp_path / "inp"
    inp.mkdir()
    truth = peers.write_flickr_outer(src, pairs.iloc[fit_pos], pairs.iloc[held_pos], inp)
    held = pairs.iloc[held_pos]
    expected = (scores.iloc[held_pos][["e1", "e2", "e3"]].mean(axis=1).to_numpy() - 1) / 3
    assert np.allclose(truth, expected)
    data = relevance.load(inp)
    assert data.n_train == len(fit_pos) and data.n_test == len(held_pos)
    assert not set(data.test["image"]) & set(data.train["image"])
    assert set(zip(data.test["image"], data.test["query_id"])) == set(zip(held["image"], held["query_id"]))
    written = pd.read_csv(inp / "ExpertAnnotations.tsv", sep="\t", header=None)
    assert len(written) == len(fit_pos) and not set(written[0]) & set(held["image"])


def test_autogluon_gets_label_free_blocks_and_the_informational_fit_every_block():
    given = peers.autogluon_blocks(["pair_match", "caption_bridge", "target_encoding", "text_tfidf"])
    assert given[""] == ["pair_match", "text_tfidf"]
    assert given["all"] == ["pair_match", "caption_bridge", "target_encoding", "text_tfidf"]


def test_table_adds_an_informational_row_per_extra_autogluon_fit():
    case = {"case": "Flickr8k", "metric": "MSE", "budget": 300, "outer": 1, "n_fit": 80, "n_held": 20,
            "kit": 0.030, "ag": 0.035, "kit_s": 50, "ag_s": 60, "kit_mb": 1, "ag_mb": 1,
            "ag_all": 0.029, "ag_all_s": 70, "ag_all_mb": 2}
    goal, extra = peers.table([case])[2:]
    assert goal.startswith("| Flickr8k |") and "| 0.857 |" in goal and goal.endswith("| yes |")
    assert extra.startswith("| Flickr8k: AutoGluon also given caption_bridge (informational) |")
    assert "| 0.0290 | 1.034 |" in extra and "| 70 | 0.71 |" in extra and extra.endswith("| n/a |")
