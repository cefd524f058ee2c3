"""The training loop and everything around it: strategy, task, evaluation, checkpoints, logging."""
