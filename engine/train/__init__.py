"""Training: run directories and checkpoints, losses, metrics, density control, per-model fit loops."""
