"""The machine: device choice and peaks (device), NVML and psutil telemetry and the thermal guard (telemetry,
watch), the unified-memory guard (memory_guard) and torch.distributed helpers (distributed)."""
