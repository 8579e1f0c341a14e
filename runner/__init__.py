"""Running an experiment whatever its mode: preflight and machine limits, the training and collection
loops, the run directory, checkpoints and disk space. train.py and collect.py are the command lines
on top."""
