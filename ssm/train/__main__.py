"""``python -m ssm.train``: the ``ssm-train`` command (:mod:`ssm.train.cli`)."""

import sys

from ssm.train.cli import main

sys.exit(main(prog="python -m ssm.train"))
