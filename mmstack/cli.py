"""The ``mmstack`` command line: the verbs of DESIGN.md, nothing else."""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import MmstackError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mmstack: multimodal Kaggle competition kit with honest CV and stacking.")
STATE: dict = {"debug": False, "workdir": None}

# the options every pipeline verb shares
ConfigArg = Annotated[Path, typer.Argument(help="Task config, e.g. configs/avito.toml.")]
InputOpt = Annotated[Optional[Path], typer.Option("--input", help="Input folder (default: task.input).")]
WorkdirOpt = Annotated[Path, typer.Option(help="Where features/, models/, oof/, submissions/ live.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value.")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("matplotlib", "PIL", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    STATE["debug"] = debug
    _setup_logging(verbose)


@app.command("make-data")
def make_data(
    task: Annotated[str, typer.Argument(help="Task whose synthetic data to write (avito, products).")],
    out: Annotated[Path, typer.Option(help="Folder to write the Kaggle-format files into.")],
    rows: Annotated[int, typer.Option(help="Training rows (test gets the Kaggle train:test ratio).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip drawing JPEGs.")] = False,
) -> None:
    """Write the embedded synthetic dataset of a task (Kaggle file format, planted signal in every modality)."""
    from .tasks import get_task

    counts = get_task(task).make_data(out, rows=rows, seed=seed, images=not no_images)
    typer.echo(", ".join(f"{k}: {v} rows" for k, v in counts.items()) + f" -> {out}")


@app.command("run")
def run_cmd(
    config: ConfigArg,
    input: InputOpt = None,
    workdir: WorkdirOpt = Path("."),
    set_: SetOpt = None,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", help="Seconds for the whole run: blocks and models that will not fit are skipped "
                             "(reported), never half-trained (default: task.time_limit, else no limit).")] = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", flag_value="auto", help="Run image shards and model folds as Ray tasks on the cluster at this "
                                         "address (alone: the cluster this machine joined with `ray start`). The "
                                         "workdir must be a folder every node sees at the same path.")] = None,
) -> None:
    """Run the pipeline: folds, features, level-1 models, stack, submission, metrics.json and report.html."""
    STATE["workdir"] = workdir
    import contextlib

    from . import parallel
    from .config import Config
    from .pipeline import run
    from .tasks import get_task

    cfg = Config.load(config, set_ or [])
    if time_limit is not None and not time_limit > 0:
        from .errors import ConfigError

        raise ConfigError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    executor = parallel.RayExecutor(ray) if ray else None
    with parallel.use(executor) if executor else contextlib.nullcontext():
        run_dir = run(cfg, input, workdir, time_limit, from_process_start=True)
    typer.echo(f"submission: {run_dir / get_task(cfg.task).submission_file}")
    typer.echo(f"report:     {run_dir / 'report.html'}")


@app.command("features")
def features_cmd(
    config: ConfigArg,
    input: InputOpt = None,
    workdir: WorkdirOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Build (or reuse) the config's feature blocks and print what each holds."""
    STATE["workdir"] = workdir
    from .config import Config
    from .pipeline import features_only

    cache = features_only(Config.load(config, set_ or []), input, workdir)
    for name, out in cache.outputs.items():
        dense = 0 if out.dense is None else out.features().shape[1]
        sparse = 0 if out.sparse is None else out.sparse.shape[1]
        state = "reused" if cache.reused[name] else f"built in {cache.seconds[name]:.1f}s"
        typer.echo(f"{name:16s} {cache.keys[name]}  dense {dense:4d}  sparse {sparse:6d}  {state}")


@app.command("train")
def train_cmd(
    config: ConfigArg,
    model: Annotated[list[str], typer.Option("--model", help="Model key(s) to train, e.g. lgb.")],
    input: InputOpt = None,
    workdir: WorkdirOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Train (or reuse) level-1 models with K-fold OOF and print their CV."""
    STATE["workdir"] = workdir
    from .config import Config
    from .pipeline import train_only

    for r in train_only(Config.load(config, set_ or []), model, input, workdir):
        typer.echo(f"{r.model:8s} cv {r.cv:.5f}  folds {' '.join(f'{s:.4f}' for s in r.fold_scores)}  "
                   f"{'reused' if r.reused else f'{r.seconds:.1f}s'}  {r.name}")


@app.command("export-onnx")
def export_onnx_cmd(
    config: ConfigArg,
    input: InputOpt = None,
    workdir: WorkdirOpt = Path("."),
    out: Annotated[Optional[Path], typer.Option(help="Folder for the ONNX files (default: "
                                                      "<workdir>/models/products/onnx).")] = None,
    set_: SetOpt = None,
) -> None:
    """Export the products task's embedding (image encoder + fusion net) to ONNX, checked against torch."""
    STATE["workdir"] = workdir
    from .config import Config
    from .products.export import export_from_config

    folder, manifest = export_from_config(Config.load(config, set_ or []), input, workdir, out)
    for name in manifest["files"]:
        typer.echo(f"wrote {folder / name}")
    diff = manifest["max_abs_diff"]
    typer.echo(f"onnxruntime vs torch, max abs difference: image encoder {diff['image_encoder']:.2e}, "
               f"fusion {diff['fusion']:.2e}")


@app.command("search")
def search_cmd(
    config: ConfigArg,
    query: Annotated[str, typer.Argument(help="What to look for, in English or Russian.")],
    images: Annotated[Path, typer.Option(help="Folder of .jpg images to search.")],
    top: Annotated[int, typer.Option(help="How many images to return.")] = 5,
    input: InputOpt = None,
    workdir: WorkdirOpt = Path("."),
    sheet: Annotated[Optional[Path], typer.Option(help="Contact sheet PNG (default: "
                                                        "submissions/search/<query>.png).")] = None,
    age_threshold: Annotated[Optional[float], typer.Option(help="Withhold images with a face estimated younger "
                                                                "(default 25: estimators err by years).")] = None,
    set_: SetOpt = None,
) -> None:
    """Rank a folder of images for a text query with the trained relevance models; never returns minors."""
    import re

    from rich.console import Console
    from rich.table import Table

    from .config import Config
    from .search import check_query, search, shown_query

    STATE["workdir"] = workdir
    check_query(query)

    slug = re.sub(r"[^\w]+", "-", query.lower()).strip("-")[:60] or "query"
    sheet = sheet or Path(workdir) / "submissions" / "search" / f"{slug}.png"
    result = search(Config.load(config, set_ or []), query, images, top, input, Path(workdir), sheet,
                    age_threshold)
    if result.notice:
        typer.echo(result.notice)
        return
    table = Table(title=f"{shown_query(query)!r}: top {len(result.ranked)} of {result.n_images} images")
    for col in ("rank", "image", "relevance"):
        table.add_column(col)
    for i, (image, score) in enumerate(zip(result.ranked["image"], result.ranked["score"]), start=1):
        table.add_row(str(i), image, f"{score:.3f}")
    Console().print(table)
    typer.echo(f"withheld by the legal filter (minors classifier or a face estimated under age): "
               f"{result.withheld} image(s)")
    if result.unreadable:
        typer.echo(f"not readable images (skipped, not ranked): {result.unreadable} file(s)")
    if result.sheet:
        typer.echo(f"contact sheet: {result.sheet}")


@app.command("moderate")
def moderate_cmd(
    texts: Annotated[Optional[Path], typer.Option(help="CSV file of texts to screen.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of photos to screen (jpg, png, gif, webp, bmp).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output CSV: texts: the input's columns + toxicity + toxic; "
                                                     "images: image,nsfw,minor,verdict,reason per image file.")] = None,
    column: Annotated[str, typer.Option(help="Column of --texts that holds the text.")] = "text",
    threshold: Annotated[Optional[float], typer.Option(help="toxic = 1 at or above this score "
                                                            "(default: configs/moderation.toml).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Moderation config (texts: configs/moderation.toml; images: "
                                                        "a config with an [images] table, default the shipped "
                                                        "thresholds).")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Texts: lexicon and character model only, no embeddings.")] = False,
) -> None:
    """Screen texts (Russian toxicity and profanity: a score 0..1 and a 0/1 verdict per row) or photos (NSFW score,
    minors score and a verdict per image file; unreadable files get a reason)."""
    from .errors import ConfigError

    if (texts is None) == (images is None):
        raise ConfigError("moderate needs exactly one of --texts FILE.csv or --images FOLDER (and --out OUT.csv)")
    if out is None:
        raise ConfigError("moderate needs --out OUT.csv")
    if images is not None:
        from .moderation_images.batch import screen_images
        from .moderation_images.settings import ImageModerationSettings

        counts = screen_images(images, out, ImageModerationSettings.load(config))
        typer.echo(f"{counts['images']} image files: " + ", ".join(f"{counts.get(v, 0)} {v}"
                                                                   for v in ("ok", "flagged", "unreadable"))
                   + f" ({counts['images_per_second']:.1f} images/s) -> {out}")
        return
    from .moderation.screen import moderate_file

    summary = moderate_file(texts, out, column=column, threshold=threshold, config=config,
                            embeddings=False if fast else None)
    typer.echo(f"{summary['rows']} rows, {summary['toxic']} toxic at threshold {summary['threshold']:.2f} "
               f"-> {summary['out']}")


@app.command("describe")
def describe_cmd(
    photos: Annotated[Optional[list[Path]], typer.Argument(help="Up to 10 photos (jpg, png, gif; 25 MB each).")] = None,
    attrs: Annotated[Optional[Path], typer.Option("--attrs", help="Listing attributes: a JSON object of strings.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Service config (default configs/describe.toml).")] = None,
    captioner: Annotated[Optional[str], typer.Option(help="retrieval, net or local (overrides the config).")] = None,
) -> None:
    """Describe one listing: validation, moderation verdicts with scores, one item or many, best photo and the
    description, printed as JSON."""
    import json
    import time

    from .describe.pipeline import Describer, load_settings
    from .describe.validate import validate_listing
    from .errors import InputError

    raw = None
    if attrs is not None:
        if not attrs.is_file():
            raise InputError(attrs, "attributes file not found")
        raw = attrs.read_bytes()
    t0 = time.perf_counter()
    listing = validate_listing(raw, [(str(p), p, None) for p in photos or []],
                               attributes_name=str(attrs) if attrs is not None else "attributes")
    seconds = time.perf_counter() - t0
    result = Describer(load_settings(config, captioner=captioner)).describe(listing, seconds)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=1))


@app.command("serve")
def serve_cmd(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: server.host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: server.port, 8000).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Service config (default configs/describe.toml).")] = None,
    captioner: Annotated[Optional[str], typer.Option(help="retrieval, net or local (overrides the config).")] = None,
) -> None:
    """Start the listing description web app: a page at / and POST /describe (JSON)."""
    from .describe.pipeline import load_settings
    from .describe.service import serve

    serve(load_settings(config, host=host, port=port, captioner=captioner))


@app.command("runs")
def runs_cmd(
    workdir: WorkdirOpt = Path("."),
    task: Annotated[Optional[str], typer.Option(help="Only runs of this task.")] = None,
    compare: Annotated[Optional[tuple[str, str]], typer.Option(help="Two run ids: per-model CV deltas.")] = None,
) -> None:
    """Leaderboard of past runs, best stack CV first (or the deltas between two runs)."""
    from rich.console import Console
    from rich.table import Table

    from .errors import ConfigError
    from .runs import load_runs, lower_is_better
    from .store import Store

    runs = load_runs(Store(workdir), task)
    if not runs:
        typer.echo(f"no runs yet in {workdir / 'submissions'}")
        return
    if compare:
        by_id = {r["run_id"]: r for r in runs}
        missing = [rid for rid in compare if rid not in by_id]
        if missing:
            raise ConfigError(f"unknown run id(s) {', '.join(missing)}; see `mmstack runs`")
        a, b = by_id[compare[0]], by_id[compare[1]]
        better = "negative" if lower_is_better(a) else "positive"
        table = Table(title=f"{a['run_id']} -> {b['run_id']} ({a['metric']}, {better} = better)")
        for col in ("model", "A", "B", "B - A"):
            table.add_column(col)
        rows = [(m, a["models"].get(m), b["models"].get(m)) for m in sorted(set(a["models"]) | set(b["models"]))]
        rows.append(("stack", a["stack"], b["stack"]))
        for name, x, y in rows:
            table.add_row(name, "" if x is None else f"{x:.5f}", "" if y is None else f"{y:.5f}",
                          "" if x is None or y is None else f"{y - x:+.5f}")
        Console(width=120).print(table)
        from .config import diff_flat

        for change in diff_flat(a["config"], b["config"]) or ["(same config)"]:
            typer.echo(f"  {change}")
        return
    models = sorted({m for r in runs for m in r["models"]})
    runs.sort(key=lambda r: r["stack"] if lower_is_better(r) else -r["stack"])
    table = Table(title=f"runs in {workdir}")
    for col in ["run", "time", "task", "stack", *models, "changes"]:
        table.add_column(col, overflow="fold")
    for r in runs:
        changes = "; ".join(r["changes"][:3]) + (f" (+{len(r['changes']) - 3})" if len(r["changes"]) > 3 else "")
        table.add_row(r["run_id"], r["time"], r["task"], f"{r['stack']:.5f}",
                      *[f"{r['models'][m]:.5f}" if m in r["models"] else "" for m in models], changes)
    # a terminal folds long cells to its width; a pipe or file gets whole lines, one run per line
    Console(width=max(120, os.get_terminal_size().columns) if sys.stdout.isatty() else 1000).print(table)


def _kaggle_app() -> typer.Typer:
    from .kaggle.commands import app as kaggle

    return kaggle


app.add_typer(_kaggle_app(), name="kaggle")  # mmstack kaggle package / check (mmstack/kaggle/)


# errors of the machine rather than of the kit or the input: one line, exit 2, no traceback
ENVIRONMENT_ERRORS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                      errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left",
                      errno.EDQUOT: "disk quota exceeded"}


def environment_message(exc: BaseException, workdir: Path | None) -> str | None:
    """One line for an OSError of the machine (a read-only or full disk, no permission) anywhere in the chain of
    ``exc``; None for anything else (a bug: shown with its traceback)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRORS:
            what = ENVIRONMENT_ERRORS[exc.errno]
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return f"{what} on the device holding {workdir or exc.filename or Path('.')}"
            verb = "write to" if exc.errno == errno.EROFS else "access"
            return f"cannot {verb} {exc.filename or workdir or Path('.')}: {what}"
        exc = exc.__cause__ or exc.__context__
    return None


def entry() -> None:
    """Console entry point: one-line errors without tracebacks unless --debug."""
    try:
        app()
    except MmstackError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished steps are cached, rerun to resume", err=True)
        sys.exit(130)
    except Exception as exc:
        message = environment_message(exc, STATE["workdir"])
        if message is None or STATE["debug"]:
            raise
        # the cache stays consistent: every artifact is written to a temporary and renamed into place
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
