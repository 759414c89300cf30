"""Train and evaluate any recbole_diffusion or RecBole model: ``python run_recbole_diffusion.py --model=DiffuRec``."""

import sys

from recbole_diffusion.cli import entry_point

if __name__ == "__main__":
    sys.exit(entry_point())
