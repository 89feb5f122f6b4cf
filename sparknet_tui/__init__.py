"""SparkNet control panel (Textual).

Never imports torch, transformers or datasets: it talks to the engine only
through the `sparknet` CLI (as subprocesses) and the run directory files.
"""
