"""The networks, one readable forward path each: GPT-2 (gpt2), the modern model (modern) and their shared parts
(parts); Hugging Face and GGUF export (export_hf, export_gguf); checkpoint files (checkpoint)."""
