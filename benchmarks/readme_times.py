"""The times the README quotes, measured on this machine: the main job (quiet, and beside one other single-thread
job), and torch's thread count (1 against torch's default, quiet and busy) on one short DiffuRec training run.

    python benchmarks/readme_times.py [--skip_main] [--skip_threads]

"Busy" means one other CPU-bound single-thread process (a matmul loop) runs for the whole measurement, as on a
shared machine. Results: benchmarks/results/readme_times.md (with date, machine and this command).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = ["--model=DiffuRec", "--dataset=ml-100k", "--epochs=3", "--hidden_size=64", "--inner_size=256",
            "--n_layers=2", "--n_heads=2", "--MAX_ITEM_LIST_LENGTH=20", "--sampler=ddim", "--sampling_steps=4"]
SHORT_RUN = ["--model=DiffuRec", "--dataset=ml-100k", "--epochs=1", "--hidden_size=32", "--inner_size=64",
             "--n_layers=1", "--n_heads=1", "--MAX_ITEM_LIST_LENGTH=20"]
LOAD = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def timed(args, env_threads=None, threads=1):
    """Wall seconds of one CLI run in a scratch directory (its stdout lines counted too)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if env_threads is not None:
        env["OMP_NUM_THREADS"] = str(env_threads)
    extra = [f"--threads={threads}"]  # None: torch's default thread count
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(ROOT, "run_recbole_diffusion.py"), *args, *extra],
                              cwd=scratch, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed: {done.stderr[-2000:]}")
    return seconds, len((done.stdout + done.stderr).strip().splitlines())


def with_load(fn):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    load = subprocess.Popen([sys.executable, "-c", LOAD], env=env)
    try:
        time.sleep(2)
        return fn()
    finally:
        load.kill()
        load.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_main", action="store_true")
    parser.add_argument("--skip_threads", action="store_true")
    args = parser.parse_args()
    lines = []
    if not args.skip_threads:
        lines += ["One short DiffuRec run (ml-100k, 1 epoch, hidden 32, 1 block, history 20), wall seconds:", "",
                  "| threads | quiet | beside one single-thread job |", "|---|---:|---:|"]
        for label, threads in (("1 (our default)", 1), (f"torch's default ({os.cpu_count()})", None)):
            quiet, _ = timed(SHORT_RUN, threads=threads, env_threads=None)
            busy, _ = with_load(lambda: timed(SHORT_RUN, threads=threads, env_threads=None))
            lines.append(f"| {label} | {quiet:.1f} | {busy:.1f} |")
            print(lines[-1], flush=True)
        lines.append("")
        lines.append("torch's default is `--threads=None` (all cores); the runs set no OMP_NUM_THREADS.")
        lines.append("")
    if not args.skip_main:
        quiet, n_lines = timed(MAIN_JOB)
        busy, _ = with_load(lambda: timed(MAIN_JOB))
        lines += ["README main job: `python run_recbole_diffusion.py " + " ".join(MAIN_JOB) + "`", "",
                  "| condition | wall time | terminal lines |", "|---|---:|---:|",
                  f"| quiet | {quiet / 60:.1f} min ({quiet:.0f} s) | {n_lines} |",
                  f"| beside one single-thread job | {busy / 60:.1f} min ({busy:.0f} s) | |"]
    write_result("readme_times", lines)


if __name__ == "__main__":
    main()
