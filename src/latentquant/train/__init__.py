"""Training and evaluation: ``train(config)``, the config object, the run directory, checkpoints.

from latentquant.train import TrainConfig, train
scores = train(TrainConfig(dataset="sprites", model="qlae", arch="small", steps=2000, out="runs/q"))
"""

from latentquant.train.config import TrainConfig, load_config, resolve, save_config
from latentquant.train.loop import TrainingDiverged, TrainingInterrupted, train
from latentquant.train.rundir import RunDir

__all__ = [
    "RunDir",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "load_config",
    "resolve",
    "save_config",
    "train",
]
