"""Documents into sections: Markdown, plain text, HTML, PDF (text layer), and Q/A tables.

Each format keeps what a citation needs: the document's title, each section's heading, and the
source's link where it names one (Markdown front matter `url:`, HTML's canonical link, a table's
`url` or `link` column). Plain text and PDF pages are split at the headings they show (a line
underlined with === or ---, a line in capitals, a short line that opens a paragraph). A Q/A
row, or a section whose heading is a question, is a FAQ entry: one chunk, never split, whose
question is also matched against the customer's question. Then `chunk` splits other long
sections at paragraph or sentence boundaries, each piece keeping its heading.
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
    faq: bool = False   # a question and its answer: one chunk, its question matched as such


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
    faq: bool = False


def is_question_heading(heading: str) -> bool:
    return heading.rstrip().endswith("?")


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
            sections.append(Section(" › ".join(h for _, h in stack), body,
                                    faq=bool(stack) and is_question_heading(stack[-1][1])))
        lines.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2)
            if level == 1 and (not title or heading == title):
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


_UNDERLINE = re.compile(r"^\s*(=+|-+)\s*$")
_END_PUNCT = (".", ",", ";", ":", "!", ")", "\"", "'")


def _short_line(line: str) -> bool:
    line = line.strip()
    return (0 < len(line) <= 60 and not line.endswith(_END_PUNCT) and not line.startswith(("-", "*", "•"))
            and sum(c.isalpha() for c in line) >= 3)


def _looks_like_heading(line: str, before: str, after: str) -> bool:
    """A short line in capitals (PDF text keeps no blank lines), or a short line that opens a
    paragraph and is followed directly by its text."""
    if not _short_line(line) or _UNDERLINE.match(after):
        return False
    line = line.strip()
    if line.upper() == line:
        return True
    return not before.strip() and bool(after.strip()) and line[0].isupper() and len(line.split()) <= 8


def text_sections(text: str) -> tuple[str, list[Section]]:
    """(the title a text starts with, or "", its sections split at the headings it shows)."""
    lines = text.strip().splitlines()
    title = ""
    if len(lines) > 1 and _UNDERLINE.match(lines[1]) and lines[1].strip().startswith("="):
        title, lines = lines[0].strip(), lines[2:]
    elif len(lines) > 1 and _short_line(lines[0]) and not lines[1].strip():
        title, lines = lines[0].strip(), lines[1:]     # a title line alone before a blank line
    if title.upper() == title:
        title = title.capitalize()
    sections: list[Section] = []
    heading, body = "", []

    def flush():
        text = "\n".join(body).strip()
        if text:
            sections.append(Section(heading, text, faq=is_question_heading(heading)))
        body.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        prev = lines[i - 1] if i else ""
        if _short_line(line) and _UNDERLINE.match(nxt):
            flush()
            heading, i = line.strip(), i + 2
            continue
        if _looks_like_heading(line, prev, nxt):
            flush()
            heading = line.strip()
            heading = heading.capitalize() if heading.upper() == heading else heading
        else:
            body.append(line)
        i += 1
    flush()
    return title, sections


def parse_text(path: Path, text: str) -> Document:
    title, sections = text_sections(text)
    return Document(title or _stem_title(path), "text", "", sections)


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
            self.sections.append(Section(" › ".join(h for _, h in self._stack), body,
                                         faq=bool(self._stack) and is_question_heading(self._stack[-1][1])))
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
            if i == 1 and text.splitlines() and text.splitlines()[0].strip() == str(title).strip():
                text = text.split("\n", 1)[1] if "\n" in text else ""
            for s in text_sections(text)[1] if text else []:
                sections.append(Section(s.title or f"page {i}", s.text, faq=s.faq))
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
            sections.append(Section(q, a, _pick(row, _LINK), faq=True))
    if not sections:
        raise ParseError(f"{path.name}: no rows with a question and an answer column "
                         f"(columns named {'/'.join(_Q[:2])} and {'/'.join(_A[:2])}).")
    return Document(_stem_title(path), fmt, "", sections)


def parse_qa_csv(path: Path, text: str) -> Document:
    # the delimiter whose header names a question column (the sniffer takes the commas inside
    # answers for the delimiter of a semicolon file)
    header = text.lstrip().split("\n", 1)[0].lower()
    for delimiter in (",", ";", "\t"):
        names = [c.strip().strip('"') for c in header.split(delimiter)]
        if any(n in _Q for n in names) and any(n in _A for n in names):
            break
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    return _qa_document(path, list(csv.DictReader(io.StringIO(text), delimiter=delimiter)), "qa-csv")


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
        if s.faq:
            out.append(Chunk(s.title, s.text.strip(), link, faq=True))
            continue
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


def sentences(text: str) -> list[str]:
    """A chunk's sentences of three words or more (lines and list items apart), or the whole
    text when it has none: what is embedded one by one, so that a long passage's one sentence
    that answers is measured on its own."""
    parts = [p.strip(" -*•\t") for p in re.split(r"(?<=[.!?])\s+|\n+", text or "")]
    return [p for p in parts if len(p.split()) >= 3] or ([text.strip()] if (text or "").strip() else [])
