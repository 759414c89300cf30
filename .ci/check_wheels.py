"""Show that the package's dependency set installs on other Pythons without those interpreters: pip resolves it
for each given version with binary wheels only (--only-binary=:all: --python-version X --dry-run), from the same
indexes the README's commands use.

    python3 .ci/check_wheels.py 3.12 3.13

Resolved with their dependencies: setup.py's INSTALL_REQUIRES (read from the file, not by running it) less torch
and thop. Resolved as single wheels (--no-deps): torch==2.13.0 (its CUDA companions are torch's business; the
README installs the CPU build first), thop (whose only dependency is torch) and RecBole 1.2.1 (installed without
dependencies, as the README does). Prints the resolved versions; exits 1 if any does not resolve.
"""

import ast
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"]
SHOWN = ("torch", "numpy", "pandas", "scipy", "scikit-learn", "ray", "recbole", "matplotlib", "tensorboard")


def install_requires():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INSTALL_REQUIRES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("INSTALL_REQUIRES not found in setup.py")


def resolve(version, requirements, no_deps=False):
    with tempfile.TemporaryDirectory() as target:
        report = os.path.join(target, "report.json")
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                   "--only-binary=:all:", "--python-version", version, "--implementation", "cp",
                   "--target", os.path.join(target, "site"), "--report", report]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        if no_deps:
            command.append("--no-deps")
        done = subprocess.run(command + requirements, capture_output=True, text=True)
        if done.returncode != 0:
            return None, done.stderr.strip().splitlines()[-3:]
        with open(report) as f:
            installed = json.load(f)["install"]
        return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installed}, None


def main(versions):
    failed = False
    for version in versions:
        torch_side = [r for r in install_requires() if r.split(">")[0].split("=")[0] in ("torch", "thop")]
        ours, error = resolve(version, [r for r in install_requires() if r not in torch_side])
        recbole, error2 = resolve(version, ["torch==2.13.0", "recbole==1.2.1"]
                                  + [r for r in torch_side if not r.startswith("torch")], no_deps=True)
        if ours is None or recbole is None:
            failed = True
            print(f"Python {version}: does NOT resolve with binary wheels: {error or error2}")
            continue
        ours.update(recbole)
        shown = ", ".join(f"{name} {ours[name]}" for name in SHOWN if name in ours)
        print(f"Python {version}: resolves with binary wheels only ({len(ours)} packages): {shown}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:] or ["3.12", "3.13"])
