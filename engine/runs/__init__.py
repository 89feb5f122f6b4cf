"""The run directory, torch-free: the contract between a run and whoever watches it. records (a metrics row, a
telemetry row, an event, the phases), status (status.json's states, fields and what readers derive from it),
rundir (paths, the RunWriter the trainer writes through, what a reader should believe), reader (the RunReader the
CLI and the panel read through), lock (one owner per run), resume (what a resume may change), eval_progress (an
evaluation's progress file). The control panel imports this package."""
