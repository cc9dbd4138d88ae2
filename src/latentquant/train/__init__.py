"""Training and evaluation: ``train(config)``, the config object, checkpoints.

    from latentquant.train import TrainConfig, train
    scores = train(TrainConfig(dataset="sprites", model="qlae", arch="small", steps=2000, out="runs/q"))
"""

from latentquant.train.config import TrainConfig, load_config, save_config
from latentquant.train.loop import TrainingDiverged, TrainingInterrupted, run_status, train

__all__ = ["TrainConfig", "TrainingDiverged", "TrainingInterrupted", "load_config", "run_status", "save_config",
           "train"]
