"""Training: the Trainer loop (trainer) and what it hands work to: the schedule and optimizers, batches to the
device (feeder), held-out loss (heldout), the divergence guard (guards), the final export and evaluation
(finish), notifications and TensorBoard, the stall alarm (watchdog), stops that act at once (interrupt), the
start-up proof of the fast paths (kernel_proof), the pre-start checks (preflight) and the training process's
entry (worker)."""
