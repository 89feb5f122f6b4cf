"""The fast pieces and the choice between them and their reference paths: the device's facts and the choice per
piece (choice), the one-pass output layer and loss (output_layer), the fused GELU (gelu), the fused QK-norm and
rotary embedding (qk_rope), and Triton where the installed torch has it (triton_support)."""
