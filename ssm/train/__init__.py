"""Training from configs: schema (``config``), optimizer, trainer, checkpoints, metrics;
reopening a run (``evaluate``, ``load_model``).

Heavy dependencies (datasets, orbax, matplotlib) load only when a run starts.
"""

from ssm.train.config import Config, ConfigError, load_config
from ssm.train.evaluate import evaluate, load_model, run_config
from ssm.train.signals import Interrupted
from ssm.train.trainer import NonFiniteLoss, train_and_evaluate

__all__ = ["Config", "ConfigError", "Interrupted", "NonFiniteLoss", "evaluate", "load_config", "load_model", "run_config",
           "train_and_evaluate"]
