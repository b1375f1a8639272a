"""Training: train state and compiled steps, optimizers and freezing, callbacks, checkpoints, the loop."""
