"""Configuration, torch-free: the profile and mix dataclasses (schema), reading profile and mix files with `--set`
overrides (loading), checking them (validation, errors), the architectures and their counts (architectures,
model_size), the cache folder (paths) and the measured ceilings saved by `sparknet doctor` (ceilings). The control
panel imports this package."""
