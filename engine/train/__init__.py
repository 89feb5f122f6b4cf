"""Training: the Trainer loop (trainer) and the parts it hands work to: the reporter (status, events,
notifications), the checkpointer, the validator (held-out loss, WikiText-2) and the finisher (finish: the final
export and evaluation); the schedule and optimizers, batches to the device (feeder), the divergence guard (guards),
TensorBoard, the stall alarm (watchdog), stops that act at once (interrupt), the start-up proof of the fast paths
(kernel_proof), the pre-start checks (preflight) and the training process's entry (worker)."""
