"""Train: the loop, checkpoints, the CSV log and cross-validation folds."""
