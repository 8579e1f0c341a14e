"""Running an experiment: the runtime factory, the training loop, the run directory and its
checkpoints. train.py is the command line on top."""
