"""Data: mix -> token cache -> batches.

sources   where documents come from (local files of five formats, Hugging Face datasets)
tokenize  tokenizing batches, in a pool of worker processes that die with their parent
cache     the token cache: shards, manifest with checksums, the folder lock, verification
prepare   prepare_mix: make the cache hold a run's share of every source
loader    MixLoader and validation_batches: windows drawn from the cache by weight
tokenizer resolving a tokenizer spec (hub name or folder) to a `tokenizers` tokenizer
hub       whether the hub is worth asking
demo_text the offline demo corpus

No torch here: numpy only, so data work never touches the GPU.
"""

from engine.config.paths import cache_root
from engine.data.cache import CACHE_FORMAT, cache_damage, read_manifest, source_cache_dir
from engine.data.loader import MixLoader, TokenStream, validation_batches, validation_lengths
from engine.data.prepare import (
                                 DEFAULT_PREPARE_TOKENS,
                                 WINDOW_MARGIN_TOKENS,
                                 PrepareStopped,
                                 prepare_mix,
                                 required_train_tokens,
                                 target_train_tokens,
)
from engine.data.sources import BadDocumentError, DataError, SourceReader, strip_front_matter
from engine.data.tokenize import encode_documents

__all__ = [
    "BadDocumentError", "CACHE_FORMAT", "DEFAULT_PREPARE_TOKENS", "DataError", "MixLoader", "PrepareStopped",
    "SourceReader", "TokenStream", "WINDOW_MARGIN_TOKENS", "cache_damage", "cache_root", "encode_documents",
    "prepare_mix", "read_manifest", "required_train_tokens",
    "source_cache_dir", "strip_front_matter", "target_train_tokens", "validation_batches", "validation_lengths",
]
