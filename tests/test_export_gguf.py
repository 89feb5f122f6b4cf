"""GGUF export: read back by transformers (its GGUF loader) with the engine's logits and the tokenizer's ids, and by
gguf's own reader for what llama.cpp needs; the CLI writes it from a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import DEMO_TOKENIZER, only_run, sparknet

from engine.config.loading import ModelConfig
from engine.data.tokenizer import load_tokenizer
from engine.models.export_gguf import export_gguf
from engine.models.export_hf import export_hf
from engine.models.registry import build_model

TEXT = " = Robert Boulter = \n The 2006 café season @-@ naïve, 12.5 % — Ōsaka!"
# transformers' GGUF loader reads a GPT-2 file's context as n_ctx, not n_positions (so 1024 here), and a
# Qwen3 file's head size as its default 128: the models here have those, llama.cpp reads either from the file
SHAPES = {
    "gpt2": dict(arch="gpt2", n_layer=2, n_embd=64, n_head=4, context=1024, bias=True),
    "modern": dict(arch="modern", n_layer=2, n_embd=256, n_head=2, context=1024, bias=False, embed_norm=True),
}


def round_trip(tmp_path, tok, arch: str, gguf_type: str, read_tokenizer: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=tok.n_vocab, **SHAPES[arch])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # norms away from 1 and biases away from 0, so a misplaced one shows
    hf_dir = export_hf(model, tmp_path / "hf", tok)
    path = export_gguf(hf_dir, tmp_path / "model.gguf", tok, gguf_type)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    x = torch.randint(0, tok.n_vocab, (2, 48))
    with torch.no_grad():
        ours, theirs = model(x), loaded(x).logits
    # the tokenizer read back from the file takes seconds: once a file type is enough
    text_ids = (AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name).encode(TEXT, add_special_tokens=False)
                if read_tokenizer else None)
    return ours, theirs, text_ids, loaded


@pytest.mark.slow
@pytest.mark.parametrize("arch, tokenizer", [("gpt2", "tok"), ("modern", "demo_tok")])
def test_an_f16_file_gives_the_engines_logits_and_the_tokenizers_ids(tmp_path, request, arch, tokenizer):
    # GPT-2's own tokenizer once; both files write their tokenizer through the same code, and reading 50,257
    # tokens back takes transformers seconds a file, so the modern file carries the demo's byte-level BPE
    tok = request.getfixturevalue(tokenizer)
    ours, theirs, text_ids, loaded = round_trip(tmp_path, tok, arch, "f16", read_tokenizer=True)
    assert type(loaded).__name__ == {"gpt2": "GPT2LMHeadModel", "modern": "Qwen3ForCausalLM"}[arch]
    # f16 matrices: equal to the float32 model within f16 rounding
    assert torch.allclose(ours, theirs, atol=3e-3), (ours - theirs).abs().max()
    assert text_ids == tok.encode(TEXT)


@pytest.fixture(scope="module")
def demo_tok():
    """The demo mix's 1,024-token tokenizer: reading GPT-2's 50,257 tokens and 50,000 merges back from a file takes
    transformers seconds, and every test here but the GPT-2 round trip is about the tensors and the fields."""
    return load_tokenizer(str(DEMO_TOKENIZER))


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type, atol", [("bf16", 2e-2), ("q8_0", 5e-2)])
def test_bf16_and_8_bit_files_load_close_to_the_model(tmp_path, demo_tok, gguf_type, atol):
    ours, theirs, _, _ = round_trip(tmp_path, demo_tok, "gpt2", gguf_type)
    assert torch.allclose(ours, theirs, atol=atol), (ours - theirs).abs().max()
    assert not torch.allclose(ours, theirs, atol=1e-6)  # really stored at lower precision


@pytest.mark.slow
def test_the_file_says_what_llama_cpp_needs(tmp_path, demo_tok):
    tok = demo_tok
    from gguf import GGUFReader
    from gguf.quants import dequantize

    cfg = ModelConfig(arch="modern", n_layer=2, n_embd=128, n_head=2, context=256, bias=False, embed_norm=True,
                      vocab_size=tok.n_vocab)
    model = build_model(cfg).eval()
    path = export_gguf(export_hf(model, tmp_path / "hf", tok), tmp_path / "m.gguf", tok, "q8_0")
    reader = GGUFReader(str(path))

    def field(key):
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == "qwen3"
    assert (field("qwen3.context_length"), field("qwen3.attention.key_length"), field("qwen3.block_count")) == \
        (256, 64, 2)
    assert field("tokenizer.ggml.model") == "gpt2" and len(field("tokenizer.ggml.tokens")) == tok.n_vocab
    assert field("tokenizer.ggml.eos_token_id") == tok.eos_id
    tensors = {t.name: t for t in reader.tensors}
    # the normalised input table and the raw output head: two tensors
    assert {"token_embd.weight", "output.weight", "blk.1.attn_k_norm.weight"} <= set(tensors)
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "Q8_0"
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # vectors stay full precision
    embd = dequantize(tensors["token_embd.weight"].data, tensors["token_embd.weight"].tensor_type)
    assert embd.shape == (tok.n_vocab, 128)
    assert np.allclose(np.sqrt((embd.astype(np.float64) ** 2).mean(1)), 1, atol=2e-2)  # rows of unit RMS


@pytest.mark.slow
def test_sparknet_export_writes_a_gguf_file_of_a_run(logs, tmp_path):
    from gguf import GGUFReader

    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096", "--set", "run.final_eval=false")
    run = only_run(logs)
    out = sparknet("export", run.name, str(tmp_path / "out"), "--format", "gguf", "--gguf-type", "q8_0").stdout
    path = tmp_path / "out" / f"{run.name}-q8_0.gguf"
    assert path.exists() and path.name in out and "Modelfile" in out
    assert [p.name for p in (tmp_path / "out").iterdir()] == [path.name]  # nothing half-written beside it
    reader = GGUFReader(str(path))
    demo = load_tokenizer(str(DEMO_TOKENIZER))
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == demo.n_vocab
    assert reader.fields["gpt2.context_length"].contents() == 128
    bad = sparknet("export", run.name, str(tmp_path / "x"), "--format", "gguf", "--gguf-type", "q4", check=False)
    assert bad.returncode == 2 and "--gguf-type" in bad.stderr and not (tmp_path / "x").exists()
