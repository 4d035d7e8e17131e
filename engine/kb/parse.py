"""Documents into sections: Markdown, plain text, HTML, PDF (text layer), and Q/A tables.

Each format keeps what a citation needs: the document's title, each section's heading, and the
source's link where it names one (Markdown front matter `url:`, HTML's canonical link, a table's
`url` or `link` column). Then `chunk` splits long sections at paragraph or sentence boundaries.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
            ".html": "html", ".htm": "html", ".pdf": "pdf", ".csv": "qa-csv", ".json": "qa-json"}


class ParseError(ValueError):
    """A file Confab cannot read as a document; the message says why."""


@dataclass
class Section:
    title: str          # the heading path, "Billing › Refunds"; "" before the first heading
    text: str
    link: str = ""      # overrides the document's link (a Q/A row's own URL)


@dataclass
class Document:
    title: str
    fmt: str
    link: str = ""
    sections: list[Section] = field(default_factory=list)


@dataclass
class Chunk:
    section: str
    text: str
    link: str


def parse_file(path: Path, data: bytes) -> Document:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ParseError(f"{path.name}: Confab reads {', '.join(sorted(SUFFIXES))} files.")
    if fmt == "pdf":
        return parse_pdf(path, data)
    text = data.decode("utf-8-sig", errors="replace")
    return {"markdown": parse_markdown, "text": parse_text, "html": parse_html,
            "qa-csv": parse_qa_csv, "qa-json": parse_qa_json}[fmt](path, text)


def _stem_title(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize() or path.name


# -- Markdown -----------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def parse_markdown(path: Path, text: str) -> Document:
    meta = {}
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end > 0:
            for line in text[4:end].splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    meta[key.strip().lower()] = value.strip().strip("'\"")
            text = text[end + 4:].lstrip("\n")
    title = meta.get("title", "")
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    lines: list[str] = []
    in_fence = False

    def flush():
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(" › ".join(h for _, h in stack), body))
        lines.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2)
            if level == 1 and not title:
                title = heading
                stack.clear()
                continue
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        else:
            lines.append(line)
    flush()
    return Document(title or _stem_title(path), "markdown", meta.get("url") or meta.get("link", ""),
                    sections)


def parse_text(path: Path, text: str) -> Document:
    body = text.strip()
    return Document(_stem_title(path), "text", "", [Section("", body)] if body else [])


# -- HTML --------------------------------------------------------------------------------------

class _HTMLSections(HTMLParser):
    SKIP = {"script", "style", "noscript", "nav", "footer", "template", "svg"}
    BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote", "table",
             "ul", "ol", "dd", "dt"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.link = ""
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._buf: list[str] = []
        self._skip = 0
        self._in_title = False
        self._heading: tuple[int, list[str]] | None = None

    def _flush(self):
        body = re.sub(r"[ \t]+", " ", "".join(self._buf))
        body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
        if body:
            self.sections.append(Section(" › ".join(h for _, h in self._stack), body))
        self._buf.clear()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "link" and (a.get("rel") or "").lower() == "canonical":
            self.link = a.get("href") or self.link
        elif tag == "meta" and a.get("property") == "og:url" and not self.link:
            self.link = a.get("content") or ""
        elif re.fullmatch(r"h[1-6]", tag) and not self._skip:
            self._flush()
            self._heading = (int(tag[1]), [])
        elif tag in self.BLOCK:
            self._buf.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif self._heading and tag == f"h{self._heading[0]}":
            level, parts = self._heading
            heading = " ".join("".join(parts).split())
            self._heading = None
            if level == 1 and (not self.title or heading == " ".join(self.title.split())):
                self.title = self.title or heading
                return
            while self._stack and self._stack[-1][0] >= level:
                self._stack.pop()
            self._stack.append((level, heading))
        elif tag in self.BLOCK:
            self._buf.append("\n")

    def handle_data(self, data):
        if self._skip:
            return
        if self._in_title:
            self.title += data
        elif self._heading:
            self._heading[1].append(data)
        else:
            self._buf.append(data)


def parse_html(path: Path, text: str) -> Document:
    p = _HTMLSections()
    p.feed(text)
    p.close()
    p._flush()
    return Document(" ".join(p.title.split()) or _stem_title(path), "html", p.link, p.sections)


# -- PDF ----------------------------------------------------------------------------------------

def parse_pdf(path: Path, data: bytes) -> Document:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise ParseError("Reading PDF needs pypdf: pip install 'confab-bot[kb]'") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        title = (reader.metadata.title if reader.metadata else None) or _stem_title(path)
        sections = []
        for i, page in enumerate(reader.pages, 1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(f"page {i}", text))
    except Exception as e:   # pypdf raises many kinds for damaged files
        raise ParseError(f"{path.name}: not a readable PDF ({e}).") from None
    if not sections:
        raise ParseError(f"{path.name}: the PDF has no text layer (scanned pages need OCR first).")
    return Document(str(title), "pdf", "", sections)


# -- question/answer tables -----------------------------------------------------------------------

_Q = ("question", "questions", "q", "title", "query")
_A = ("answer", "answers", "a", "response", "body")
_LINK = ("url", "link", "source", "href")


def _pick(row: dict, names: tuple[str, ...]) -> str:
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for n in names:
        v = lowered.get(n)
        if v not in (None, ""):
            return str(v).strip()
    return ""


def _qa_document(path: Path, rows: list[dict], fmt: str) -> Document:
    sections = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        q, a = _pick(row, _Q), _pick(row, _A)
        if q and a:
            sections.append(Section(q, a, _pick(row, _LINK)))
    if not sections:
        raise ParseError(f"{path.name}: no rows with a question and an answer column "
                         f"(columns named {'/'.join(_Q[:2])} and {'/'.join(_A[:2])}).")
    return Document(_stem_title(path), fmt, "", sections)


def parse_qa_csv(path: Path, text: str) -> Document:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return _qa_document(path, list(csv.DictReader(io.StringIO(text), dialect=dialect)), "qa-csv")


def parse_qa_json(path: Path, text: str) -> Document:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ParseError(f"{path.name}: not valid JSON ({e}).") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [])
    return _qa_document(path, data if isinstance(data, list) else [], "qa-json")


# -- chunks ----------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk(doc: Document, max_chars: int) -> list[Chunk]:
    """Sections split into pieces of at most about `max_chars`, at paragraphs, then sentences."""
    out = []
    for s in doc.sections:
        link = s.link or doc.link
        pieces: list[str] = []
        for para in re.split(r"\n\s*\n", s.text):
            para = para.strip()
            if not para:
                continue
            units = [para] if len(para) <= max_chars else _SENTENCE_END.split(para)
            for unit in units:
                while len(unit) > max_chars:          # one enormous sentence
                    pieces.append(unit[:max_chars])
                    unit = unit[max_chars:]
                if pieces and len(pieces[-1]) + len(unit) + 2 <= max_chars:
                    sep = "\n\n" if unit is para else " "
                    pieces[-1] += sep + unit
                else:
                    pieces.append(unit)
        out += [Chunk(s.title, p, link) for p in pieces if p.strip()]
    return out
