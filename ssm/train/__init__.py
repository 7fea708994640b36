"""Training from configs: schema (``config``), optimizer, trainer, checkpoints, metrics.

Heavy dependencies (datasets, orbax, matplotlib) load only when a run starts.
"""

from ssm.train.config import Config, ConfigError, load_config
from ssm.train.trainer import NonFiniteLoss, train_and_evaluate

__all__ = ["Config", "ConfigError", "NonFiniteLoss", "load_config", "train_and_evaluate"]
