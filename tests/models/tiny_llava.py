"""A tiny LLaVA-1.5-style vision model of the real formats, with random weights: a llama GGUF
language model (SentencePiece-style vocabulary with byte fallback) and a CLIP projector GGUF
(`mmproj`, projector type mlp) whose output width matches the language model, written with the
`gguf` package. llama-cpp-python's Llava15ChatHandler loads the pair through libmtmd, encodes an
image into 16 tokens and generates: the path users take, minus meaning.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

rng = np.random.default_rng(0)


def w(*shape, scale=0.02, f16=False):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    return a.astype(np.float16) if f16 else a

def build_text(path, n_embd=64, n_ff=128, n_head=4, n_layer=1):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    for piece in ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁" + chr(c) for c in range(ord("a"), ord("z") + 1)]:
        tokens.append(piece); types.append(1)
    scores = [0.0] * len(tokens)
    n_vocab = len(tokens)
    import gguf
    g = gguf.GGUFWriter(str(path), "llama")
    g.add_name("tiny-llava-text")
    g.add_context_length(512); g.add_embedding_length(n_embd); g.add_block_count(n_layer)
    g.add_feed_forward_length(n_ff); g.add_head_count(n_head); g.add_head_count_kv(n_head)
    g.add_rope_dimension_count(n_embd // n_head); g.add_layer_norm_rms_eps(1e-5)
    g.add_vocab_size(n_vocab)
    g.add_tokenizer_model("llama"); g.add_token_list(tokens); g.add_token_scores(scores); g.add_token_types(types)
    g.add_bos_token_id(1); g.add_eos_token_id(2); g.add_unk_token_id(0)
    g.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    g.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    g.add_tensor("output.weight", w(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        g.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            g.add_tensor(p + t + ".weight", w(n_embd, n_embd))
        g.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        g.add_tensor(p + "ffn_gate.weight", w(n_ff, n_embd))
        g.add_tensor(p + "ffn_up.weight", w(n_ff, n_embd))
        g.add_tensor(p + "ffn_down.weight", w(n_embd, n_ff))
    g.write_header_to_file(); g.write_kv_data_to_file(); g.write_tensors_to_file(); g.close()

def build_mmproj(path, text_embd=64, n_embd=32, n_ff=64, n_head=4, n_layer=2, image=32, patch=8):
    import gguf
    g = gguf.GGUFWriter(str(path), "clip")
    g.add_bool("clip.has_vision_encoder", True)
    g.add_bool("clip.has_llava_projector", True)
    g.add_string("clip.projector_type", "mlp")
    g.add_bool("clip.use_gelu", True)
    g.add_uint32("clip.vision.image_size", image)
    g.add_uint32("clip.vision.patch_size", patch)
    g.add_uint32("clip.vision.embedding_length", n_embd)
    g.add_uint32("clip.vision.feed_forward_length", n_ff)
    g.add_uint32("clip.vision.projection_dim", text_embd)
    g.add_uint32("clip.vision.block_count", n_layer)
    g.add_uint32("clip.vision.attention.head_count", n_head)
    g.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    g.add_array("clip.vision.image_mean", [0.481, 0.458, 0.408])
    g.add_array("clip.vision.image_std", [0.269, 0.261, 0.276])
    n_pos = (image // patch) ** 2 + 1
    g.add_tensor("v.patch_embd.weight", w(n_embd, 3, patch, patch, f16=True))
    g.add_tensor("v.class_embd", w(n_embd))
    g.add_tensor("v.position_embd.weight", w(n_pos, n_embd, f16=True))
    g.add_tensor("v.pre_ln.weight", np.ones(n_embd, np.float32)); g.add_tensor("v.pre_ln.bias", np.zeros(n_embd, np.float32))
    for i in range(n_layer):
        p = f"v.blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            g.add_tensor(p + t + ".weight", w(n_embd, n_embd, f16=True)); g.add_tensor(p + t + ".bias", w(n_embd))
        for t in ("ln1", "ln2"):
            g.add_tensor(p + t + ".weight", np.ones(n_embd, np.float32)); g.add_tensor(p + t + ".bias", np.zeros(n_embd, np.float32))
        g.add_tensor(p + "ffn_up.weight", w(n_ff, n_embd, f16=True)); g.add_tensor(p + "ffn_up.bias", w(n_ff))
        g.add_tensor(p + "ffn_down.weight", w(n_embd, n_ff, f16=True)); g.add_tensor(p + "ffn_down.bias", w(n_embd))
    g.add_tensor("mm.0.weight", w(text_embd, n_embd, f16=True)); g.add_tensor("mm.0.bias", w(text_embd))
    g.add_tensor("mm.2.weight", w(text_embd, text_embd, f16=True)); g.add_tensor("mm.2.bias", w(text_embd))
    g.write_header_to_file(); g.write_kv_data_to_file(); g.write_tensors_to_file(); g.close()


def build_tiny_llava(folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_text(folder / "tiny-llava-text.gguf")
    build_mmproj(folder / "mmproj-tiny.gguf")
    return folder
