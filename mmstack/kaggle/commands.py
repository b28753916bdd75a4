"""``mmstack kaggle package`` and ``mmstack kaggle check``: the CLI's kaggle sub-app."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Submit from a Kaggle kernel with internet off: package it, check it here.")

PythonOpt = Annotated[Optional[str], typer.Option(
    "--python", help="A Python 3.12 interpreter (Kaggle's version); default: python3.12 on PATH, uv or pyenv.")]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@app.command("package")
def package_cmd(
    config: Annotated[Path, typer.Argument(help="Task config, e.g. configs/avito.toml.")],
    out: Annotated[Path, typer.Option(help="Folder to write kernel/, code/ (and artifacts/) into.")],
    user: Annotated[str, typer.Option(help="Your Kaggle user name (owner of the datasets and the kernel).")],
    competition: Annotated[Optional[str], typer.Option(help="Competition slug (default: the task's).")] = None,
    mode: Annotated[str, typer.Option(help="train: the kernel trains everything; predict: it predicts with a "
                                           "local run's saved models (artifacts dataset).")] = "train",
    gpu: Annotated[bool, typer.Option("--gpu", help="Ask for a GPU session (enable_gpu).")] = False,
    workdir: Annotated[Path, typer.Option(help="Predict mode: where the local run's store lives.")] = Path("."),
    run: Annotated[Optional[str], typer.Option(help="Predict mode: the run id (default: the task's latest).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="The competition data (default: task.input).")] = None,
    python: PythonOpt = None,
    on_mismatch: Annotated[str, typer.Option(help="Predict mode, when the competition's files are not the run's: "
                                                  "train from scratch, or fail.")] = "train",
    ship: Annotated[Optional[list[str]], typer.Option(help="Ship this package although the image has it.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value.")] = None,
) -> None:
    """Write DIR/kernel (metadata + script), DIR/code (wheels) and, in predict mode, DIR/artifacts."""
    from .package import package

    result = package(config, out, user, set_ or [], competition, mode, gpu, workdir, run, input, python,
                     on_mismatch, ship or [])
    for name in ("code", "artifacts"):
        if name in result.sizes:
            typer.echo(f"{name} dataset: {out / name}  {result.counts[name]} files, {_mb(result.sizes[name])}")
    typer.echo(f"kernel:       {out / 'kernel'}  ({mode} mode{', run ' + result.run_id if result.run_id else ''})")
    typer.echo(f"not shipped (the Kaggle image has them, see mmstack/kaggle/kaggle_image.txt): "
               f"{', '.join(f'{n} {v}' for n, v in result.assumed.items())} and their {len(result.excluded) - len(result.assumed)} "
               "dependencies")
    typer.echo(f"next: mmstack kaggle check {out}; then kaggle datasets create -p {out / 'code'}"
               + (f"; kaggle datasets create -p {out / 'artifacts'}" if "artifacts" in result.sizes else "")
               + f"; kaggle kernels push -p {out / 'kernel'}")


@app.command("check")
def check_cmd(
    folder: Annotated[Path, typer.Argument(help="The folder `kaggle package` wrote.")],
    python: PythonOpt = None,
    data: Annotated[Optional[Path], typer.Option(help="Competition files for the fake /kaggle/input (default: "
                                                      "the packaged input folder).")] = None,
    layout: Annotated[str, typer.Option(help="Mount layout: new (input/competitions/<slug>, input/datasets/"
                                             "<owner>/<slug>) or old (input/<slug>).")] = "new",
    timeout: Annotated[float, typer.Option(help="Seconds the kernel may run.")] = 4 * 3600,
    work: Annotated[Optional[Path], typer.Option(help="Scratch folder (default: a new temporary one).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the fake /kaggle and the environment.")] = False,
) -> None:
    """Validate the metadata, install the code dataset into a fresh Python 3.12 environment with --no-index and
    run the kernel with the network cut off against a fake /kaggle/input; check its submission."""
    from .check import check

    result = check(folder, python, data, layout, timeout, work, keep)
    typer.echo(f"ok: {result.submission} ({result.rows} rows)")
    if result.max_abs_diff is not None:
        typer.echo(f"matches the local run's submission: max abs difference {result.max_abs_diff:.2g}")
    typer.echo(f"interpreter {result.python}; network cut by {result.network}")
    for line in result.stages:
        typer.echo(f"  kernel: {line}")
    typer.echo("  check: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()) + f"; log {result.log_path}")
