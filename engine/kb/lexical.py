"""Words: what a question asks about, and how much of it a passage covers.

    terms(text)                  normalised content words (stop words and chatter dropped)
    Vocabulary(texts)            the knowledge base's words: document frequency, IDF, typo repair
    Vocabulary.question(text)    the question's terms, repaired against the knowledge base's
                                 words ("refnd" -> "refund"), each weighted by its IDF; a word
                                 in `common` (the embedding model's whole-word tokens: real
                                 words) is never taken for a typo
    coverage(question, passage)  the IDF-weighted share of the question's terms in the passage

Coverage is the signal that tells "a page about the same topic" from "a page that says what was
asked": a question about a student discount finds the pricing page, but "student" is not on it.
A word the knowledge base never uses weighs as much as its rarest word.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

STOP = frozenset("""
a about above after again against all also am an and any anyone anybody anything are aren't as at
be because been before being below between both but by can can't cannot could couldn't did didn't
do does doesn't doing don't down during each either else even ever every few for from further get
gets getting got had hadn't has hasn't have haven't having he her here hers herself him himself his
how i i'd i'll i'm i've if in into is isn't it it's its itself just let let's like may me might mine
more most much must my myself need needs no nor not now of off on once one only or other ought our
ours ourselves out over own please pls plz same she should shouldn't so some such than that that's
the their theirs them themselves then there there's these they they're this those through thus to
too under until up upon us very was wasn't we we're were weren't what what's whats when where
where's which while who who's whom why why's will with won't would wouldn't yes yet you you'd
you'll you're you've your yours yourself yourselves hi hello hey thanks thank thx ty cheers ok okay
guys folks team quick question questions wondering wonder know tell want wanted trying try tried
someone somebody something still really actually basically anyway though maybe possible way ways
thing things stuff lot lots bit kind sort able going gonna wanna im ive dont doesnt cant wont isnt
whats hows u ur r yeah yep nope oh ah um well also help does did
long far away many much new old last next ago fine good bad big small little says say said
seems seem everything anything nothing everyone become becomes became take takes took make makes
made put go goes went going come comes came give gives gave see sees saw look looks looking use
using used work works worked working happen happened happens yesterday today tomorrow tonight
morning week weeks month months year years day days time times already just right left sure
other others another else whole able unable keep keeps kept thing idea thought think
""".split())

_WORD = re.compile(r"[a-z0-9]+(?:[.'’][a-z0-9]+)*(?:-[a-z0-9]+)*")
_UNIT = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$")      # 5ghz -> 5 ghz, 12v -> 12 v


def _norm(word: str) -> str:
    """A light stemmer: the same word in its common inflections maps to one form."""
    w = word.replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or w[-1].isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ly") and len(w) > 5:
        w = w[:-2]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[:-len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "ls":
                w = w[:-1]
            elif w.endswith(("at", "iz", "bl", "ur", "as", "ar", "ak")):
                w += "e"
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def raw_terms(text: str, joined: bool = True) -> list[tuple[str, str]]:
    """(as written, normalised) content terms. A hyphenated word gives its parts, and with
    `joined` the whole word too ("wi-fi" -> wi, fi, wifi), so that either spelling matches."""
    out = []
    for w in words(text):
        unit = _UNIT.match(w)
        parts = list(unit.groups()) if unit else w.split("-")
        forms = parts + (["".join(parts)] if joined and len(parts) > 1 else [])
        for p in forms:
            if p and p not in STOP and (len(p) > 1 or p.isdigit()):
                out.append((p, _norm(p)))
    return out


def terms(text: str, joined: bool = True) -> list[str]:
    return [t for _, t in raw_terms(text, joined)]


_STOP_FORMS = frozenset(f for w in STOP if len(w) > 3 for f in (w, _norm(w)))


def _damerau(a: str, b: str, limit: int) -> int:
    """Edit distance with transpositions, or limit + 1 once it is over `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


@dataclass(frozen=True)
class Term:
    term: str          # normalised, as the knowledge base spells it
    weight: float      # its IDF
    asked: str         # as the question spelled it
    known: bool        # the knowledge base uses the word


class Vocabulary:
    """Document frequencies over the knowledge base's chunks (title, heading and text)."""

    def __init__(self, texts: list[str], common: frozenset[str] = frozenset()):
        self.n = max(1, len(texts))
        self.common = common
        self.df: dict[str, int] = {}
        self.surface: dict[str, str] = {}     # a term's most common spelling, for keyword search
        seen_surface: dict[tuple[str, str], int] = {}
        for text in texts:
            for t in set(terms(text)):
                self.df[t] = self.df.get(t, 0) + 1
            for w in words(text):
                for p in w.split("-"):
                    key = (_norm(p), p)
                    seen_surface[key] = seen_surface.get(key, 0) + 1
        for (t, p), n in sorted(seen_surface.items(), key=lambda kv: -kv[1]):
            self.surface.setdefault(t, p)
        self._by_len: dict[int, list[str]] = {}
        for t in list(self.df) + sorted(_STOP_FORMS - self.df.keys()):
            self._by_len.setdefault(len(t), []).append(t)
        self.max_idf = self.idf(1)

    def idf(self, df: int) -> float:
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def repair(self, term: str, asked: str = "") -> str | None:
        """The knowledge base's word that `term` (normalised from `asked`) is a typo of, if one
        is close enough: one edit from a word of 4 letters or more, two from one of 8 or more,
        the first letter kept."""
        if term in self.df:
            return term
        if len(asked or term) < 4 or term.isdigit() or (asked or term) in self.common:
            return None
        limit = 1 if len(term) < 8 else 2
        best, best_key = None, None
        for length in range(len(term) - limit, len(term) + limit + 1):
            for cand in self._by_len.get(length, ()):
                if cand[0] != term[0]:
                    continue
                d = _damerau(term, cand, limit)
                if d <= limit and (best_key is None or (d, -self.df.get(cand, 0)) < best_key):
                    best, best_key = cand, (d, -self.df.get(cand, 0))
        return best

    def question(self, text: str) -> list[Term]:
        out, seen = [], set()
        for asked, normed in raw_terms(text, joined=False):
            fixed = self.repair(normed, asked) or self.repair(asked, asked)
            if fixed in _STOP_FORMS and fixed not in self.df:
                continue                     # a misspelt stop word ("befor", "tkae")
            term = fixed or normed
            if term in seen:
                continue
            seen.add(term)
            weight = self.idf(self.df[term]) if fixed else self.max_idf
            out.append(Term(term, weight, asked, fixed is not None))
        return out

    def keyword_query(self, question: list[Term]) -> str:
        """An FTS5 query: any of the question's words, as the knowledge base spells them."""
        words_ = [self.surface.get(t.term, t.asked) for t in question]
        return " OR ".join('"' + w.replace('"', "") + '"' for w in dict.fromkeys(words_) if w)


def coverage(question: list[Term], passage_terms: set[str]) -> float:
    total = sum(t.weight for t in question)
    if not total:
        return 0.0
    return sum(t.weight for t in question if t.term in passage_terms) / total
