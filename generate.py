"""Generate text from a trained byte-level model, from a clone of the repository: the
same command as ``ssm-generate`` and ``python -m ssm.generate`` (``python generate.py --help``).

    python generate.py --model runs/text-mamba --prompt "def main(" --max-new-tokens 200
"""

import sys

from ssm.generate.cli import main

if __name__ == "__main__":
    sys.exit(main())
