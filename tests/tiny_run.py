"""The flags of the smallest real training run the tests make: 64x64 sprites, the `small`
backbone, batch 8, 100 evaluation images, no evaluation during training, a log line every
step, one thread. Tests add the model, the steps and the run folder."""

TINY = ["--dataset", "sprites", "--arch", "small", "--batch-size", "8", "--eval-samples", "100"]
TINY += ["--eval-every", "0", "--log-every", "1", "--threads", "1"]
