"""Configuration, torch-free: the profile and mix dataclasses (schema), reading and validating profile and mix
files with `--set` overrides (loading), parameter and FLOP counts (model_size), the cache folder (paths) and the
measured ceilings saved by `sparknet doctor` (ceilings). The control panel imports this package."""
