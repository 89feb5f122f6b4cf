"""SparkNet engine: data, model, training, evaluation, telemetry, run directories.

Importing this package (and engine.config, engine.rundir) must stay free of
torch so the control panel can share the validation and file-reading code.
"""

__version__ = "0.1.0"


class SparkNetError(Exception):
    """A user-facing error: its message is one line that names what is wrong and how to fix it."""
