"""Training and evaluation: ``train(config)``, the config object, the run directory, checkpoints.

>>> from latentquant.train import TrainConfig, train
>>> config = TrainConfig(dataset="sprites", model="qlae", arch="small", steps=2000, out="runs/q")
>>> scores = train(config)  # doctest: +SKIP

``resolve(config)`` is the one way from a config to what a run needs (a
``Resolved``: the complete config, the data, the model), for code that
drives its own loop.
"""

from latentquant.train.config import Resolved, TrainConfig, load_config, resolve, save_config
from latentquant.train.loop import TrainingDiverged, TrainingInterrupted, train
from latentquant.train.rundir import RunDir

__all__ = [
    "Resolved",
    "RunDir",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "load_config",
    "resolve",
    "save_config",
    "train",
]
