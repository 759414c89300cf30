"""recbole_diffusion: diffusion recommenders for RecBole."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# A set that installs and works together today on Python 3.11 (measured; see README "Requirements").
# recbole 1.2.1 pins ray<=2.6.3; ray 2.6.3 needs numpy<2, setuptools<81 (pkg_resources) and pyarrow<26;
# numpy<2 in turn bounds pandas, scipy and scikit-learn. torch is pinned exactly: an unpinned torch pulls a
# CUDA build of several GB, and 2.13.0 is the CPU wheel this machine holds (install CUDA torch yourself first
# on a GPU machine; pip then keeps it if it satisfies the pin's range below).
INSTALL_REQUIRES = [
    "recbole==1.2.1",
    "torch>=2.6,<=2.13.0",
    "numpy>=1.24,<2",
    "pandas>=2.0,<2.3",
    "scipy>=1.10,<1.15",
    "scikit-learn>=1.3,<1.6",
    "ray[tune]==2.6.3",
    "pyarrow<26",
    "setuptools<81",
    "pyyaml>=6",
    "matplotlib>=3.7",
]

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="recbole_diffusion",
    version="0.1.0",
    description="Diffusion recommenders (DiffuRec, DreamRec, DiffRec, ...) as RecBole models, with one CLI.",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["recbole_diffusion", "recbole_diffusion.*"]) + ["recbole_diffusion.properties"],
    # The top-level properties/ folder is installed inside the package, so a non-editable install finds it.
    package_dir={"recbole_diffusion.properties": "properties"},
    package_data={"recbole_diffusion.properties": ["*.yaml", "*/*.yaml"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7"]},
    py_modules=["run_recbole_diffusion"],
    entry_points={"console_scripts": ["recbole-diffusion=recbole_diffusion.cli:entry_point"]},
    license="MIT",
)
