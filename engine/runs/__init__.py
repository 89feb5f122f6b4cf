"""The run directory, torch-free: the contract between a run and whoever watches it. rundir (paths, status,
metrics, events, checkpoints folders, what a reader should believe), lock (one owner per run), resume (what a
resume may change), eval_progress (an evaluation's progress file). The control panel imports this package."""
