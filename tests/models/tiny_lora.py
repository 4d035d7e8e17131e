"""LoRA adapters made in the test: random low-rank matrices for a few layers of a real base,
written in the real formats (a GGUF adapter with the `gguf` package, with the keys of llama.cpp's
convert_lora_to_gguf.py; a diffusers/PEFT safetensors file as `save_lora_weights` writes it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models import gguf_meta

CHAT_TARGETS = ("attn_q", "attn_v", "ffn_down")


def make_chat_lora(path: str | Path, base_gguf: str | Path, layers=(0, 1, 2, 3), rank: int = 8,
                   alpha: float = 16.0, seed: int = 0, strength: float = 0.05,
                   targets=CHAT_TARGETS) -> Path:
    """A GGUF LoRA for `base_gguf`: for each `blk.N.<target>.weight` a `.lora_a` [in, r] and a
    `.lora_b` [r, out] (ggml order; numpy shapes are the reverse)."""
    import gguf
    meta = gguf_meta.read_metadata(str(base_gguf))
    base = gguf_meta.read_tensors(str(base_gguf))
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), meta["general.architecture"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for n in layers:
        for target in targets:
            name = f"blk.{n}.{target}.weight"
            n_in, n_out = base[name][0][:2]
            writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, n_in)) * strength).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((n_out, rank)) * strength).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_image_lora(folder: str | Path, base: str | Path, rank: int = 4, seed: int = 0,
                    strength: float = 0.5) -> Path:
    """A random LoRA on the attention projections of a diffusers pipeline's UNet, saved with
    the pipeline class's own `save_lora_weights` (PEFT's lora_A / lora_B names)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * strength)
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(unet))
    return Path(folder)
