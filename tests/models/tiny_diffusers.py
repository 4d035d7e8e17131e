"""A tiny Stable Diffusion pipeline of the real architecture (UNet2DConditionModel, AutoencoderKL,
CLIP text encoder and tokenizer, Euler scheduler) with random weights, saved with
`save_pretrained` so that Confab loads it with diffusers' own `from_pretrained`.

No hub: the CLIP tokenizer's vocabulary is written here (characters and their word-final
forms, no merges). With `safety=True` the folder also holds a random StableDiffusionSafetyChecker
and a CLIPImageProcessor, as real SD 1.x/2.x folders do.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

from tests.scratch import scratch_dir


def build_tiny_sd(folder: str | Path, safety: bool = False, sample_size: int = 32) -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                        norm_num_groups=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000))
    vocab_dir = folder.parent / (folder.name + "-vocab")
    vocab_dir.mkdir(exist_ok=True)
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"),
                              model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    safety_checker = feature_extractor = None
    if safety:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPConfig, CLIPImageProcessor
        config = CLIPConfig(
            text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                             num_hidden_layers=2, vocab_size=1000),
            vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                               num_hidden_layers=2, image_size=32, patch_size=8),
            projection_dim=32)
        safety_checker = StableDiffusionSafetyChecker(config)
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32},
                                               crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=safety_checker,
                                   feature_extractor=feature_extractor,
                                   requires_safety_checker=safety)
    pipe.save_pretrained(folder)
    return folder


_BUILT: dict[bool, Path] = {}


def tiny_sd(safety: bool = False) -> Path:
    """The tiny pipeline folder, built once per test run (in a temporary folder)."""
    if safety not in _BUILT:
        root = scratch_dir("confab-tiny-sd-")
        _BUILT[safety] = build_tiny_sd(root / ("tiny-sd-safe" if safety else "tiny-sd"), safety)
    return _BUILT[safety]


def text_png(lines: list[str], size: tuple[int, int] = (640, 160)) -> bytes:
    """A white PNG with black printed lines of text (DejaVu Sans when installed)."""
    import io

    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 32)
    except OSError:
        font = ImageFont.load_default(size=32)
    for i, line in enumerate(lines):
        draw.text((20, 20 + 70 * i), line, fill="black", font=font)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()
