"""Tokenizer resolution: one fast tokenizer object, whatever the source.

A spec is "gpt2" (or another Hugging Face hub name) or a local folder. Every
tokenizer ends up as a `tokenizers` (Rust) tokenizer, so encoding is fast and
the worker processes of `prepare` can rebuild it from one JSON string.

Resolution of "gpt2": the folder named by SPARKNET_TOKENIZER, else the
tokenizer files in the Hugging Face cache (then from the hub). Nothing here
imports torch; transformers is only imported to save a tokenizer for export.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from engine import SparkNetError, one_line
from engine.data.hub import hub_reachable

_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")
_HF_FILES_HINT = "vocab.json+merges.txt or tokenizer.json"


class Tokenizer:
    """A text <-> token-id codec with a stable fingerprint of its vocabulary."""

    def __init__(self, backend, name: str, eos_token: str, origin: str = ""):
        from tokenizers import Tokenizer as RustTokenizer

        self.name = name
        self.origin = origin or name
        self.eos_token = eos_token
        self._json = backend.to_str()
        self._backend = RustTokenizer.from_str(self._json)
        # Text that happens to contain "<|endoftext|>" is data, not a document boundary:
        # special tokens are encoded as ordinary text; the real EOS is appended by the caller.
        self._backend.encode_special_tokens = True
        eos_id = self._backend.token_to_id(eos_token)
        if eos_id is None:
            raise SparkNetError(f"tokenizer '{name}': end-of-text token {eos_token!r} is not in its vocabulary")
        self.eos_id = int(eos_id)
        self.n_vocab = int(self._backend.get_vocab_size(with_added_tokens=True))
        self._fingerprint: str | None = None

    # ------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    # ------------------------------------------------------------ identity

    @property
    def fingerprint(self) -> str:
        """sha256 of the vocabulary and merges: equal for the same GPT-2 vocabulary from any origin."""
        if self._fingerprint is None:
            vocab = sorted(self._backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
            merges = json.loads(self._json).get("model", {}).get("merges") or []
            merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
            h = hashlib.sha256()
            h.update(json.dumps(vocab, ensure_ascii=False).encode())
            h.update(json.dumps(merges, ensure_ascii=False).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def token_dtype(self) -> str:
        return "uint16" if self.n_vocab <= 65536 else "uint32"

    def to_serialized(self) -> dict:
        """What a worker process needs to rebuild this tokenizer (see from_serialized)."""
        return {"json": self._json, "name": self.name, "eos_token": self.eos_token, "origin": self.origin}

    @classmethod
    def from_serialized(cls, data: dict) -> "Tokenizer":
        from tokenizers import Tokenizer as RustTokenizer

        return cls(RustTokenizer.from_str(data["json"]), data["name"], data["eos_token"], data["origin"])

    def save(self, out_dir: Path) -> Path:
        """Write the Hugging Face tokenizer files, so AutoTokenizer.from_pretrained(out_dir) works.

        Written directly rather than through transformers' save_pretrained: importing transformers to
        write two small files took a second of every run's finish (docs/lab/performance.md)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "tokenizer.json").write_text(self._json, encoding="utf-8")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.eos_token,
                  "eos_token": self.eos_token, "unk_token": self.eos_token, "clean_up_tokenization_spaces": False}
        (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return out_dir

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, n_vocab={self.n_vocab}, eos_id={self.eos_id}, from {self.origin})"


# ---------------------------------------------------------------- loading


def load_tokenizer(spec: str) -> Tokenizer:
    """Resolve a mix's `tokenizer` value ("gpt2", a hub name, or a local folder) to a Tokenizer."""
    # Loading takes a few tenths of a second and prepare, the loader and evaluation all ask for it.
    return _load_cached((spec or "gpt2").strip(), os.environ.get("SPARKNET_TOKENIZER", ""))


@functools.lru_cache(maxsize=8)
def _load_cached(spec: str, _sparknet_tokenizer_env: str) -> Tokenizer:
    path = Path(os.path.expanduser(spec))
    if path.exists():
        return load_tokenizer_folder(path)
    if spec.startswith(("/", ".", "~")):
        raise SparkNetError(
            f"tokenizer folder {spec} does not exist; point `tokenizer` in the mix at a folder with {_HF_FILES_HINT}"
        )
    if spec == "gpt2" and os.environ.get("SPARKNET_TOKENIZER"):
        folder = Path(os.path.expanduser(os.environ["SPARKNET_TOKENIZER"]))
        if not folder.is_dir():
            raise SparkNetError(f"SPARKNET_TOKENIZER={folder} is not a folder; set it to a folder with {_HF_FILES_HINT}")
        tok = load_tokenizer_folder(folder)
        tok.name, tok.origin = "gpt2", str(folder)
        return tok
    tok = _from_hub(spec)
    if tok is None:
        raise SparkNetError(
            f"tokenizer '{spec}' could not be loaded (no network and no cached copy); point `tokenizer` in the mix at "
            f"a local folder with {_HF_FILES_HINT}" + (" or set SPARKNET_TOKENIZER=DIR" if spec == "gpt2" else "")
        )
    return tok


def load_tokenizer_folder(folder: Path) -> Tokenizer:
    from tokenizers import Tokenizer as RustTokenizer

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SparkNetError(f"tokenizer {folder} is not a folder; give a folder with {_HF_FILES_HINT}")
    try:
        if (folder / "tokenizer.json").is_file():
            backend = RustTokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            backend = _byte_level_bpe(folder / "vocab.json", folder / "merges.txt")
        else:
            raise SparkNetError(f"tokenizer folder {folder} has neither tokenizer.json nor vocab.json+merges.txt; add them")
    except SparkNetError:
        raise
    except Exception as e:  # a corrupt file: tokenizers raises its own Exception type
        raise SparkNetError(f"tokenizer folder {folder}: cannot read its files ({one_line(e)})") from None
    eos = _eos_from_config(folder) or _eos_from_vocab(backend)
    if eos is None:
        raise SparkNetError(
            f"tokenizer folder {folder}: no end-of-text token found; add eos_token to its tokenizer_config.json"
        )
    if backend.token_to_id(eos) is not None and eos not in {t.content for t in _added_tokens(backend)}:
        from tokenizers import AddedToken

        backend.add_special_tokens([AddedToken(eos, special=True, normalized=False)])
    return Tokenizer(backend, str(folder), eos, origin=str(folder))


def _byte_level_bpe(vocab_file: Path, merges_file: Path):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    backend = RustTokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _added_tokens(backend) -> list:
    try:
        return list(backend.get_added_tokens_decoder().values())
    except AttributeError:
        return []


def _eos_from_config(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            eos = json.loads(f.read_text(encoding="utf-8")).get("eos_token")
        except (OSError, ValueError):
            continue
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and eos:
            return eos
    return None


def _eos_from_vocab(backend) -> str | None:
    for candidate in _EOS_CANDIDATES:
        if backend.token_to_id(candidate) is not None:
            return candidate
    return None


_HUB_FILES = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]


def _from_hub(name: str) -> Tokenizer | None:
    """The tokenizer files of a hub repository: the Hugging Face cache first (works offline), then the hub."""
    from huggingface_hub import snapshot_download

    attempts = [True] if not hub_reachable() else [True, False]
    for local_only in attempts:
        try:
            folder = snapshot_download(name, allow_patterns=_HUB_FILES, local_files_only=local_only)
        except Exception:  # not cached, no such repository, or the hub refused: try the next way, then say so
            continue
        try:
            tok = load_tokenizer_folder(Path(folder))
        except SparkNetError as e:
            raise SparkNetError(f"tokenizer '{name}' from the hub: {e}") from None
        tok.name, tok.origin = name, f"hub:{name}"
        return tok
    return None
