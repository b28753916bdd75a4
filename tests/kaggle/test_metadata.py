"""Kernel and dataset metadata: what the kaggle CLI would refuse is refused here, with a message naming the field."""
from __future__ import annotations

import json

import pytest

from mmstack.kaggle.metadata import (MetadataError, check_kernel_folder, dataset_metadata, kernel_metadata,
                                     validate_dataset, validate_kernel)


def good_kernel(**changes):
    meta = kernel_metadata("alice", "mmstack-avito-predict", "mmstack avito predict", "mmstack_kernel.py",
                           "avito-demand-prediction", ["alice/mmstack-avito-code"], gpu=False)
    meta.update(changes)
    return meta


def test_written_metadata_passes_and_keeps_internet_off():
    meta = good_kernel()
    validate_kernel(meta, "k.json")
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["avito-demand-prediction"]
    assert kernel_metadata("a", "slugs", "title", "x.py", None, [], gpu=True)["enable_gpu"] is True
    validate_dataset(dataset_metadata("alice", "mmstack-avito-code", "mmstack avito code"), "d.json")


@pytest.mark.parametrize("change, message", [
    ({"id": None}, "id is missing"),
    ({"id": "alice/abcd"}, "slug must have at least 5 characters, it has 4"),
    ({"id": "alice-no-slash"}, 'id must be "user/slug"'),
    ({"id": "/mmstack-avito"}, "user name before '/' is empty"),
    ({"id": "alice/Mmstack_Avito"}, "lower-case letters, digits and '-' only"),
    ({"title": "abc"}, "title must have at least 5 characters"),
    ({"enable_internet": None}, "enable_internet is missing: the kaggle CLI then turns internet ON"),
    ({"enable_internet": True}, "enable_internet is true"),
    ({"enable_internet": "true"}, "enable_internet is true"),
    ({"enable_internet": "no"}, "enable_internet must be true or false"),
    ({"enable_internet": 0}, "enable_internet must be true or false"),
    ({"enable_gpu": "yes"}, "enable_gpu must be true or false"),
    ({"is_private": 1}, "is_private must be true or false"),
    ({"language": "julia"}, "language must be one of"),
    ({"kernel_type": "app"}, "kernel_type must be script or notebook"),
    ({"code_file": ""}, "code_file is missing"),
    ({"dataset_sources": ["mmstack-avito-code"]}, 'dataset_sources must be "user/slug"'),
    ({"dataset_sources": "alice/mmstack-avito-code"}, "dataset_sources must be a list"),
    ({"competition_sources": ["Avito Demand"]}, "expected a competition slug"),
])
def test_kernel_metadata_the_cli_would_reject_is_rejected(change, message):
    meta = good_kernel()
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    with pytest.raises(MetadataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        validate_kernel(meta, "kernel/kernel-metadata.json")
    assert str(err.value).startswith("kernel/kernel-metadata.json: ")


def test_string_booleans_are_read_as_the_cli_reads_them():
    validate_kernel(good_kernel(enable_internet="false", is_private="True", enable_gpu="FALSE"), "k.json")


@pytest.mark.parametrize("change, message", [
    ({"id": None}, "id is missing"),
    ({"id": "alice/short"}, "slug must have 6 to 50 characters, it has 5"),
    ({"id": "alice/" + "x" * 51}, "slug must have 6 to 50 characters, it has 51"),
    ({"id": "alice/INSERT_SLUG_HERE"}, "lower-case"),
    ({"title": "five5"}, "title must have 6 to 50 characters"),
    ({"title": "t" * 51}, "title must have 6 to 50 characters"),
    ({"licenses": []}, "licenses must be a non-empty list"),
    ({"licenses": [{"nom": "CC0-1.0"}]}, "licenses must be a non-empty list"),
])
def test_dataset_metadata_the_cli_would_reject_is_rejected(change, message):
    meta = dataset_metadata("alice", "mmstack-avito-code", "mmstack avito code")
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    with pytest.raises(MetadataError, match=message):
        validate_dataset(meta, "code/dataset-metadata.json")


def test_kernel_folder_needs_its_code_file_and_valid_json(tmp_path):
    (tmp_path / "kernel-metadata.json").write_text(json.dumps(good_kernel()))
    with pytest.raises(MetadataError, match="code_file 'mmstack_kernel.py' is not in"):
        check_kernel_folder(tmp_path)
    (tmp_path / "mmstack_kernel.py").write_text("print(1)\n")
    assert check_kernel_folder(tmp_path)["id"] == "alice/mmstack-avito-predict"
    (tmp_path / "kernel-metadata.json").write_text("{not json")
    with pytest.raises(MetadataError, match="not valid JSON"):
        check_kernel_folder(tmp_path)


def test_kaggle_check_stops_on_bad_metadata_with_one_line(tmp_path):
    """Before any environment is made or anything runs: exit 2, one line naming the file and the field."""
    import subprocess
    import sys

    from mmstack.kaggle.package import PACKAGE_FILE

    from ..conftest import ROOT

    (tmp_path / PACKAGE_FILE).write_text(json.dumps({"mode": "train", "user": "alice", "slugs": {}}))
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    meta = good_kernel()
    del meta["enable_internet"]
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    (kernel / "mmstack_kernel.py").write_text("print(1)\n")
    done = subprocess.run([sys.executable, "-m", "mmstack", "kaggle", "check", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {kernel / 'kernel-metadata.json'}: enable_internet is missing: the kaggle CLI then turns internet "
        "ON; write \"enable_internet\": false"]
