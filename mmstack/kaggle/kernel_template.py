"""mmstack Kaggle kernel, written by `mmstack kaggle package`: runs with internet off.

1. finds the code dataset (the kit's wheel and its dependencies) under /kaggle/input, in either mount layout;
2. installs it with `pip install --no-index --find-links` (no other wheel source, no network);
3. runs the kit's kernel step (mmstack.kaggle.kernel_run) in a fresh interpreter: it finds the competition files
   by glob, trains (train mode) or predicts from the artifacts dataset (predict mode) with its work folder in
   /kaggle/working, writes /kaggle/working/submission.csv and prints the stage times and peak memory.

Only the standard library is used before the install. MMSTACK_KAGGLE_ROOT moves /kaggle (the local check).
"""
import glob
import json
import os
import re
import resource
import subprocess
import sys
import time

SETTINGS = {}  # filled in by `mmstack kaggle package`

ROOT = os.environ.get("MMSTACK_KAGGLE_ROOT", "/kaggle")
CODE_MARKER = "mmstack-code.json"
PIP_SOURCE_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONSTRAINT",
                   "PIP_REQUIREMENT", "PIP_TARGET", "PIP_PREFIX", "PIP_USER")


def say(message):
    print(f"[mmstack-kernel] {message}", flush=True)


def fail(message):
    say(f"FAILED: {message}")
    sys.exit(1)


def find_dataset(marker, slug):
    """The folder of a dataset holding ``marker``: /kaggle/input/<slug>/ or /kaggle/input/datasets/<owner>/<slug>/
    (the newer layout); the one named ``slug`` when several hold the marker."""
    base = os.path.join(ROOT, "input")
    found = sorted(set(glob.glob(os.path.join(base, "*", marker)) + glob.glob(os.path.join(base, "*", "*", marker))
                       + glob.glob(os.path.join(base, "datasets", "*", "*", marker))))
    if not found:
        listing = sorted(glob.glob(os.path.join(base, "*")) + glob.glob(os.path.join(base, "*", "*")))
        fail(f"no dataset with {marker} under {base} (add the dataset {slug!r} to the kernel's inputs); "
             f"found: {', '.join(listing[:20]) or 'nothing'}")
    named = [path for path in found if os.path.basename(os.path.dirname(path)) == slug]
    return os.path.dirname((named or found)[0])


def pip_env():
    """pip reads no config file and no wheel source but the code dataset."""
    env = dict(os.environ)
    for var in PIP_SOURCE_VARS:
        env.pop(var, None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def missing_wheel(output):
    """The package pip found no wheel for, and who asked for it, from pip's messages."""
    wanted = re.findall(r"No matching distribution found for ([A-Za-z0-9._-]+)", output)
    if not wanted:
        return None
    name = wanted[-1]
    asked = re.findall(r"requirement " + re.escape(name) + r"[^\n(]*\(from ([^)]+)\)", output)
    return name + (f" (needed by {asked[-1]})" if asked else "")


def pip_install(code_dir, args, what):
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", code_dir, "--no-cache-dir",
               "--no-compile", "--progress-bar", "off", *args]  # modules compile when first imported
    done = subprocess.run(command, capture_output=True, text=True, env=pip_env())
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", flush=True)
        lacking = missing_wheel(done.stdout + done.stderr)
        if lacking:
            fail(f"missing wheel: the code dataset has no wheel for {lacking}; rebuild it with "
                 "`mmstack kaggle package` (or add that wheel at the dataset's top level)")
        fail(f"pip could not install {what} from {code_dir} (pip's messages above)")
    installed = re.findall(r"Successfully installed (.*)", done.stdout)
    say(f"installed {what}: {installed[-1] if installed else 'nothing new (all present)'}")


def install(code_dir):
    """The kit's dependencies that the image lacks (their dependencies resolved from the dataset alone, so a
    missing transitive wheel fails here), then the kit itself without dependencies (the image provides the
    rest: see mmstack-code.json)."""
    with open(os.path.join(code_dir, CODE_MARKER)) as fh:
        code = json.load(fh)
    pip_install(code_dir, ["-r", os.path.join(code_dir, "requirements.txt")], "the kit's dependencies")
    pip_install(code_dir, ["--no-deps", "--force-reinstall", os.path.join(code_dir, code["kit_wheel"])],
                "the kit")


def main():
    started = time.perf_counter()
    say(f"HF_HUB_OFFLINE at start: {os.environ.get('HF_HUB_OFFLINE', 'unset')}")
    # nothing may download at run time (a hub call without it hangs for tens of seconds before failing)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    say(f"{SETTINGS['mode']} mode, Python {sys.version.split()[0]}, root {ROOT}")
    code_dir = find_dataset(CODE_MARKER, SETTINGS["code_dataset"])
    say(f"code dataset: {code_dir}")
    install(code_dir)
    installed_at = time.perf_counter()
    working = os.path.join(ROOT, "working")
    os.makedirs(working, exist_ok=True)
    settings_path = os.path.join(working, "mmstack-kernel-settings.json")
    with open(settings_path, "w") as fh:
        json.dump({**SETTINGS, "root": ROOT, "install_seconds": round(installed_at - started, 1)}, fh)
    done = subprocess.run([sys.executable, "-m", "mmstack.kaggle.kernel_run", settings_path])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    say(f"total {time.perf_counter() - started:.1f} s (install {installed_at - started:.1f} s); "
        f"peak memory of the kernel step {peak:.0f} MB")
    if done.returncode != 0:
        fail(f"the kernel step exited with {done.returncode}")


if __name__ == "__main__":
    main()
