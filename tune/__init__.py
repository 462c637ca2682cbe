"""The Ray Tune + Optuna adapter and the ``kdtune`` command line; the only package that imports ray."""
