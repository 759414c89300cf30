"""recbole_diffusion: diffusion recommenders for RecBole."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# RecBole 1.2.1 is installed separately, without its dependencies (`pip install --no-deps recbole==1.2.1`, the
# README's commands): its metadata pins ray<=2.6.3, which has no wheel for Python 3.12+ and needs numpy<2, and pip
# cannot override a dependency's pin. Its runtime dependencies are listed here instead, with today's releases
# allowed; recbole_diffusion.compat repairs what numpy 2 and pandas 3 broke in RecBole. Lower bounds are the
# versions measured to work (the old pinned set, extra "pinned"); no upper bound that nothing measured.
# torch: install torch==2.13.0 first on a CPU machine (an unpinned torch pulls a CUDA build of several GB).
INSTALL_REQUIRES = [
    "torch>=2.6",
    "numpy>=1.24",
    "pandas>=2.0",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "ray[tune]>=2.6.3",
    "pyyaml>=6",
    "matplotlib>=3.7",
    # RecBole 1.2.1's own requirements (its metadata, less ray<=2.6.3)
    "tqdm>=4.48.2",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "tensorboard>=2.5.0",
    "thop>=0.1.1.post2207130030",
    "tabulate>=0.8.10",
    "plotly>=4.0.0",
    "texttable>=0.9.0",
    "psutil>=5.9.0",
]
# The set that RecBole 1.2.1's metadata implies (Ray 2.6.3), for users who keep it: pip install -e ".[pinned]".
PINNED = ["numpy>=1.24,<2", "pandas>=2.0,<2.3", "scipy>=1.10,<1.15", "scikit-learn>=1.3,<1.6", "ray[tune]==2.6.3",
          "pyarrow<26", "setuptools<81"]

# TPE search for sweeps (--search_alg=optuna|hyperopt, Ray Tune's OptunaSearch/HyperOptSearch): pip install -e ".[search]".
# Measured with both Ray lines (2.6.3 and current): optuna 5.0.0, hyperopt 0.3.0.
SEARCH = ["optuna>=5.0", "hyperopt>=0.3.0"]

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="recbole_diffusion",
    version="0.1.0",
    description="Diffusion recommenders (DiffuRec, DreamRec, DiffRec, ...) as RecBole models, with one CLI.",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["recbole_diffusion", "recbole_diffusion.*"]) + ["recbole_diffusion.properties"],
    # The top-level properties/ folder is installed inside the package, so a non-editable install finds it.
    package_dir={"recbole_diffusion.properties": "properties"},
    package_data={"recbole_diffusion.properties": ["*.yaml", "*/*.yaml"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7"], "pinned": PINNED, "search": SEARCH},
    py_modules=["run_recbole_diffusion"],
    entry_points={"console_scripts": ["recbole-diffusion=recbole_diffusion.cli:entry_point"]},
    license="MIT",
)
