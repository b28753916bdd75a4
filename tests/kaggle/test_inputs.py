"""Finding a kernel's inputs under /kaggle/input (either mount layout, zipped files), and the kernel script."""
from __future__ import annotations

import ast
import runpy
import zipfile

import pytest

from mmstack.errors import InputError
from mmstack.kaggle.inputs import (ARTIFACTS_MARKER, CODE_MARKER, COMPETITIONS, find_competition_files,
                                   find_dataset, lay_out)
from mmstack.kaggle.kernel_script import read_settings, render
from mmstack.kaggle.wheels import ImageSpec, canonical, requirement_name

AVITO = COMPETITIONS["avito"]


def write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("mount", ["competitions/avito-demand-prediction", "avito-demand-prediction"])
def test_competition_files_are_found_by_name_in_either_layout(tmp_path, mount):
    comp = tmp_path / "input" / mount
    write(comp / "train.csv", "a\n1\n")
    write(comp / "data" / "test.csv", "a\n2\n")  # in a sub folder
    with zipfile.ZipFile(write(comp / "periods_train.csv.zip").parent / "periods_train.csv.zip", "w") as zf:
        zf.writestr("periods_train.csv", "p\n3\n")
    with zipfile.ZipFile(comp / "train_jpg.zip", "w") as zf:
        zf.writestr("data/competition_files/train_jpg/ab.jpg", b"jpeg")
    write(comp / "test_jpg" / "cd.jpg")
    write(tmp_path / "input" / "other" / "train.csv", "not this one")  # another mount's train.csv is ignored
    found = find_competition_files(tmp_path, AVITO)
    assert found["train.csv"] == comp / "train.csv" and found["test.csv"] == comp / "data" / "test.csv"
    assert found["train_jpg"].name == "train_jpg.zip" and found["test_jpg"] == comp / "test_jpg"
    assert "train_active.csv" not in found
    folder = lay_out(found, tmp_path / "working" / "in")
    assert (folder / "periods_train.csv").read_text() == "p\n3\n"  # unzipped
    assert (folder / "test.csv").read_text() == "a\n2\n" and (folder / "train_jpg.zip").is_file()
    assert (folder / "test_jpg" / "cd.jpg").is_file()


def test_a_missing_competition_file_is_named(tmp_path):
    write(tmp_path / "input" / "avito-demand-prediction" / "train.csv")
    with pytest.raises(InputError, match="competition file.s. test.csv not found.*avito-demand-prediction"):
        find_competition_files(tmp_path, AVITO)


def test_our_datasets_are_found_by_marker_in_either_layout(tmp_path):
    new = write(tmp_path / "input" / "datasets" / "alice" / "mmstack-avito-code" / CODE_MARKER, "{}").parent
    old = write(tmp_path / "input" / "mmstack-avito-artifacts" / ARTIFACTS_MARKER, "{}").parent
    write(tmp_path / "input" / "stale-copy" / CODE_MARKER, "{}")
    assert find_dataset(tmp_path, CODE_MARKER, "mmstack-avito-code") == new
    assert find_dataset(tmp_path, ARTIFACTS_MARKER, "mmstack-avito-artifacts") == old
    with pytest.raises(InputError, match="add the dataset 'x-y-z' to the kernel's inputs"):
        find_dataset(tmp_path / "nothing", CODE_MARKER, "x-y-z")


def test_the_kernel_script_is_stdlib_only_and_carries_its_settings():
    settings = {"mode": "predict", "config_text": 'a = "кот"\n# "quotes" \\ and\nb = """x"""\nc = \'\\\'\n',
                "overrides": ["x=1", '"""', "", "\\"], "": ""}
    text = render(settings)
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names} | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"glob", "json", "os", "re", "resource", "subprocess", "sys", "time"}
    assert runpy.run_path(_save(text), run_name="not_main")["SETTINGS"] == settings == read_settings(text)


def _save(text):
    import tempfile

    path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    path.write(text)
    path.close()
    return path.name


def test_image_spec_reads_the_packaged_constraints():
    image = ImageSpec.read()
    names = {requirement_name(r) for r in image.requirements}
    assert {"torch", "numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "catboost", "polars"} <= names
    assert all("==" in r for r in image.requirements)
    assert image.provides == {"xgboost-cpu": "xgboost"}
    assert "polars" not in {requirement_name(r) for r in image.without({"polars"}).requirements}
    assert canonical("Jinja2") == "jinja2" and canonical("typing_extensions") == "typing-extensions"
