"""Writing templates: named prompts with slots (translate, promo, write), shared by every
adapter's commands and the API's /v1/templates.

A template checks its slots and turns them into one or more chat prompts (`Part`s): translating
into three languages is three prompts, each answered on its own, so a small model is not asked
to juggle languages in one reply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from engine.errors import BadRequest
from engine.jobs import ChatMessage

SYSTEM = "You are a helpful assistant."   # what small models stay on course with (MODELS.md)

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian",
    "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese",
    "zh": "Chinese",
}
MAX_LANGUAGES = 8


@dataclass(frozen=True)
class Slot:
    name: str
    label: str                          # the question a form or console prompt shows
    choices: tuple[str, ...] = ()
    default: str = ""                   # "" and not optional: required
    optional: bool = False
    long: bool = False                  # a paragraph rather than a line (Slack/Discord modals)
    max_chars: int = 200


@dataclass(frozen=True)
class Part:
    label: str                          # "French", "text", "product description"
    messages: list[ChatMessage]


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    slots: tuple[Slot, ...]
    build: Callable[[dict], list[Part]] = field(repr=False)
    max_tokens: int = 300

    def missing(self, values: dict) -> list[Slot]:
        return [s for s in self.slots if not s.optional and not s.default and not str(values.get(s.name) or "").strip()]

    def check(self, values: dict, max_chars: int = 32_000) -> dict:
        """The slots with defaults filled in, or BadRequest naming what is wrong."""
        unknown = set(values) - {s.name for s in self.slots}
        if unknown:
            raise BadRequest(f"The {self.name} template has no slot {', '.join(sorted(unknown))}; "
                             f"its slots are {', '.join(s.name for s in self.slots)}.")
        missing = self.missing(values)
        if missing:
            raise BadRequest(f"The {self.name} template needs: {', '.join(s.name for s in missing)}.")
        out = {}
        for s in self.slots:
            value = str(values.get(s.name) or s.default).strip()
            limit = max_chars if s.long else s.max_chars
            if len(value) > limit:
                raise BadRequest(f"'{s.name}' is {len(value)} characters; the limit is {limit}.")
            if s.choices and value and value.lower() not in s.choices:
                raise BadRequest(f"'{s.name}' must be one of {', '.join(s.choices)}, not '{value}'.")
            out[s.name] = value.lower() if s.choices else value
        return out

    def render(self, values: dict, max_chars: int = 32_000) -> list[Part]:
        return self.build(self.check(values, max_chars))

    def public(self) -> dict:
        return {"id": self.name, "object": "template", "description": self.description,
                "slots": [{"name": s.name, "label": s.label, "choices": list(s.choices),
                           "default": s.default, "required": not s.optional and not s.default}
                          for s in self.slots]}


def _chat(user: str) -> list[ChatMessage]:
    return [ChatMessage("system", SYSTEM), ChatMessage("user", user)]


# -- translate --------------------------------------------------------------------------------------

def parse_languages(text: str) -> list[str]:
    """'fr, de' or 'French and German' -> ['French', 'German']."""
    names = {v.lower(): v for v in LANGUAGES.values()}
    out = []
    for token in re.split(r"[,\s/+]+|\band\b", text.strip()):
        t = token.strip().lower()
        if not t:
            continue
        lang = LANGUAGES.get(t) or names.get(t) or LANGUAGES.get(t.split("-")[0])
        if lang is None:
            raise BadRequest(f"I don't know the language '{token}'. Use a code or a name, like "
                             "fr, de, es, ja or French.")
        if lang not in out:
            out.append(lang)
    if not out:
        raise BadRequest("Name at least one language, like: /translate fr,de: Hello")
    if len(out) > MAX_LANGUAGES:
        raise BadRequest(f"At most {MAX_LANGUAGES} languages in one request, not {len(out)}.")
    return out


def _translate(v: dict) -> list[Part]:
    return [Part(lang, _chat(f"Translate the following text into {lang}. Reply with the "
                             f"translation only.\n\n{v['text']}"))
            for lang in parse_languages(v["languages"])]


def split_translate_arg(arg: str) -> dict:
    """'/translate fr,de: Hello' -> {'languages': 'fr,de', 'text': 'Hello'}; without a language
    list before a colon, the text goes into English."""
    head, sep, rest = arg.partition(":")
    if sep and head.strip() and len(head) <= 80:
        try:
            parse_languages(head)
            return {"languages": head.strip(), "text": rest.strip()}
        except BadRequest:
            if re.fullmatch(r"[\w\s,/+-]{1,40}", head.strip()) and "," in head:
                raise
    return {"languages": "en", "text": arg.strip()}


# -- promo -----------------------------------------------------------------------------------------

PROMO_OUTPUTS = ("text", "image", "both")


def _promo(v: dict) -> list[Part]:
    facts = (f"Product: {v['product']}\nSize: {v['size']}\nContainer: {v['container']}\n"
             f"Price: {v['price']}\nType of store: {v['store']}\nSetting: {v['setting']}")
    parts = []
    if v["output"] in ("text", "both"):
        parts.append(Part("text", _chat(
            f"Write a short, lively promotional text (three or four sentences and a call to "
            f"action) for this offer. Use only these facts.\n\n{facts}")))
    return parts


def promo_poster_prompt(v: dict) -> str:
    """The image prompt for a promotion's poster."""
    return (f"advertising poster, {v['product']} in a {v['size']} {v['container']}, "
            f"{v['setting']}, {v['store']} shop display, price tag {v['price']}, "
            f"bright commercial photography")


# -- write -------------------------------------------------------------------------------------------

WRITE_KINDS = {
    "product": "a product description (one paragraph that names its benefits)",
    "announcement": "a short announcement for a team or customers (a headline and two short paragraphs)",
    "story": "a very short story (about 150 words) with a beginning, a turn and an ending",
}
WRITE_ALIASES = {"description": "product", "product-description": "product", "announce": "announcement",
                 "news": "announcement", "short-story": "story", "tale": "story"}


def _write(v: dict) -> list[Part]:
    return [Part(v["kind"], _chat(f"Write {WRITE_KINDS[v['kind']]} about: {v['topic']}"))]


def split_write_arg(arg: str) -> dict:
    kind, _, topic = arg.strip().partition(" ")
    kind = WRITE_ALIASES.get(kind.lower(), kind.lower())
    if kind not in WRITE_KINDS:
        raise BadRequest(f"Write what? Use /write KIND TOPIC with KIND one of {', '.join(WRITE_KINDS)}.")
    return {"kind": kind, "topic": topic.strip()}


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("translate", "Translate text into one or several languages",
             (Slot("text", "Text to translate", long=True),
              Slot("languages", "Languages (codes or names, comma-separated)", default="en"))
             , _translate, max_tokens=400),
    Template("promo", "A promotional text (and a poster, when an image model is installed)",
             (Slot("product", "Product"), Slot("size", "Size (e.g. 500 ml, large)"),
              Slot("container", "Container (bottle, box, can…)"), Slot("price", "Price"),
              Slot("store", "Type of store (supermarket, boutique, online…)"),
              Slot("setting", "Setting (beach in summer, cosy kitchen…)"),
              Slot("output", "Make text, image or both?", choices=PROMO_OUTPUTS, default="text")),
             _promo, max_tokens=200),
    Template("write", "Product descriptions, announcements and short stories",
             (Slot("kind", "Kind", choices=tuple(WRITE_KINDS)), Slot("topic", "Topic", long=True)),
             _write, max_tokens=300),
)}


def get(name: str) -> Template:
    template = TEMPLATES.get(name)
    if template is None:
        raise BadRequest(f"There is no template '{name}'. Templates: {', '.join(TEMPLATES)}.")
    return template
