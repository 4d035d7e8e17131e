"""Text in images with RapidOCR (PP-OCR ONNX models that ship inside rapidocr-onnxruntime).

Used when no vision model is installed: the text read from a screenshot is what the chat
model gets to see. rapidocr is imported when the reader loads.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_FILES = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx",
               "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx"}


@dataclass
class OcrLine:
    text: str
    score: float
    box: list[list[float]]        # four corners, pixels


def rows(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Lines grouped into rows (tops within half a line), top to bottom, each left to right."""
    def top(line): return min(p[1] for p in line.box)
    def left(line): return min(p[0] for p in line.box)
    def height(line): return max(p[1] for p in line.box) - top(line)
    out: list[list[OcrLine]] = []
    for line in sorted(lines, key=top):
        if out and abs(top(line) - top(out[-1][0])) < max(4.0, height(out[-1][0]) / 2):
            out[-1].append(line)
        else:
            out.append([line])
    return [sorted(row, key=left) for row in out]


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    return [line for row in rows(lines) for line in row]


def as_text(lines: list[OcrLine]) -> str:
    """The text as it reads: one row per line, boxes of a row joined by a space."""
    return "\n".join(" ".join(line.text for line in row) for row in rows(lines))


class OcrReader:
    """One loaded RapidOCR. Calls are serialised (the lock guards the ONNX sessions)."""

    def __init__(self, folder: str | Path | None = None, threads: int = 0, min_score: float = 0.5):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise ImportError("rapidocr-onnxruntime is not installed: pip install 'confab-bot[ocr]'") from e
        kwargs = {"text_score": min_score}
        if folder:
            for part, name in MODEL_FILES.items():
                path = Path(folder) / name
                if path.exists():
                    kwargs[f"{part}_model_path"] = str(path)
        if threads:
            kwargs["intra_op_num_threads"] = threads   # rapidocr copies it to each model
        self._lock = threading.Lock()
        self.engine = RapidOCR(**kwargs)

    def read(self, image: bytes | str | Path) -> list[OcrLine]:
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
        with self._lock:
            result, _ = self.engine(data)
        lines = []
        for box, text, score in result or []:
            if text and text.strip():
                lines.append(OcrLine(text.strip(), float(score), [[float(x), float(y)] for x, y in box]))
        return reading_order(lines)

    def close(self) -> None:
        self.engine = None
