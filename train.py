"""Train a sequence model from a config, from a clone of the repository: the same
command as ``ssm-train`` and ``python -m ssm.train`` (``python train.py --help``).

    python train.py                                   # configs/default.yaml
    python train.py --config configs/copying/s4.yaml --set optim.lr=3e-4 model.n_layers=4
"""

import sys

from ssm.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
