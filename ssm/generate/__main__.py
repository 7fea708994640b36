"""``python -m ssm.generate``: the ``ssm-generate`` command (:mod:`ssm.generate.cli`)."""

import sys

from ssm.generate.cli import main

sys.exit(main(prog="python -m ssm.generate"))
