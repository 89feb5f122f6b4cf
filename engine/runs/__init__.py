"""The run directory, torch-free: the contract between a run and whoever watches it. status (the states and what
readers derive from status.json), rundir (paths, the files, what a reader should believe), lock (one owner per run),
resume (what a resume may change), eval_progress (an evaluation's progress file). The control panel imports this
package."""
