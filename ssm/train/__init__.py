"""Training from configs: schema (``config``), optimizer, trainer, checkpoints, metrics;
reopening a run (``evaluate``, ``load_model``).

Heavy dependencies (datasets, orbax, matplotlib) load only when a run starts.
"""

from ssm.extras import require

require("train", "yaml", "datasets", "orbax.checkpoint", "matplotlib", "tqdm", what="ssm.train")

from ssm.train.config import Config, ConfigError, load_config  # noqa: E402
from ssm.train.evaluate import evaluate, load_model, run_config  # noqa: E402
from ssm.train.signals import Interrupted  # noqa: E402
from ssm.train.trainer import NonFiniteLoss, train_and_evaluate  # noqa: E402

__all__ = ["Config", "ConfigError", "Interrupted", "NonFiniteLoss", "evaluate", "load_config", "load_model", "run_config",
           "train_and_evaluate"]
