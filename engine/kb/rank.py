"""Which passage answers, and whether any does: reranking and the answerability gate.

With a cross-encoder reranker installed (`confab models pull ms-marco-minilm-l6-v2`), it scores
the best passages found (`by_reranker`): documents and passages are ordered by its score, which
is then the relevance the gate compares with `min_rerank`. None ships in a package that installs
offline (PyPI, Debian and npm were searched for ms-marco, bge-reranker and cross-encoder weights:
the reranking packages there download their weights from a model hub at run time, or are
trained rankers over other features). Without one the fused candidates are reranked with the
embedding model and the knowledge base's own words:

- documents are ordered by one score over what the searches measured for each document's
  candidate passages (DOCUMENT_WEIGHTS): `similarity`, the best cosine between the question and
  a passage under its title and heading, or a FAQ entry's own question; `heading`, the best
  cosine with a passage's title and heading alone (or the FAQ question); `sentence`, the best
  cosine with one sentence of a passage (a long passage dilutes less); and `keyword`, BM25
  squashed to 0..1. On the three tuning knowledge bases (135 answerable questions) the right
  document came first for 123 by similarity alone and 130 by this score; chosen leaving one
  knowledge base out, the weights put the right document first on the third for 42-44 of 45
  where similarity alone did 39-43;
- within the best document, the passage that covers most of the question wins (an error code's
  own section rather than the page's introduction);
- the gate answers only when `relevance` = max(similarity, sentence, heading) of the best
  document reaches `min_score` and `coverage` (lexical.py: the IDF-weighted share of the
  question's words the passage holds, typos repaired) reaches `min_coverage`.

Coverage never picks between documents: the page holding most of the words of a question that
no page answers would win, and the gate would hear a coverage the question never had. Coverage
is what tells "a page about the same topic" from "a page that says what was asked". `margin`,
the best document's score over the next document's, is measured and may be gated on
(`min_margin`), but on the tuning knowledge bases right answers had a close second document as
often as wrong ones; calibration leaves it off unless it pays. Tried on the tuning knowledge
bases and not used, because none raised the gate's accuracy at 0.90 silence with one knowledge
base held out: words matched by meaning (MiniLM word similarity: "tire" ~ "tyres", but also
"android" ~ "app", "paypal" ~ "payment"), coverage by the best sentence or by the whole best
document, a Snowball stemmer, unknown words weighted by their English frequency (wordfreq),
a logistic regression over every signal here, and SmolLM2-135M asked whether the passage
answers (its yes/no odds separated right answers from unanswerable questions with an AUC of
0.63, coverage 0.91). The thresholds come from `confab kb eval --tune` on a team's own
questions; `Signals` carries every number behind a decision, for `kb ask --json`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from engine.kb.index import Candidate, Hit
from engine.kb.lexical import Term, coverage, terms

BM25_HALF = 8.0                 # keyword score = bm25 / (bm25 + BM25_HALF), 0..1
SECTION_COVERAGE_WEIGHT = 0.5   # choosing among one document's passages: similarity + this * coverage
DOCUMENT_WEIGHTS = {"similarity": 1.0, "heading": 0.5, "sentence": 0.5, "keyword": 0.2}
MEANT_DROP = 0.10               # a word the passage lacks counts as covered when the question
                                # without it is this much less similar to the passage
MEANT_WORDS = 12                # the rarest missing words measured so (a long question's others stay missing)


@dataclass
class DocumentScore:
    """What the searches measured for one document: the best of its candidate passages."""
    name: str
    similarity: float = -1.0
    heading: float = -1.0
    sentence: float = -1.0
    keyword: float = 0.0

    @property
    def score(self) -> float:
        return sum(w * getattr(self, k) for k, w in DOCUMENT_WEIGHTS.items())


@dataclass
class Scored:
    hit: Hit
    similarity: float
    coverage: float
    keyword: float
    missing: list[str]          # question words the passage does not contain
    candidate: Candidate
    document: DocumentScore
    absent: list[Term] = field(default_factory=list)   # those words, weighed
    reranker: float | None = None   # the cross-encoder's score, when one reranked the passages


@dataclass
class Signals:
    """What the gate measured for the best passage (and the drafted answer, when there is one)."""
    relevance: float = 0.0       # max(similarity, sentence, heading): what min_score is compared with
    score: float = 0.0           # the best document's score (DOCUMENT_WEIGHTS), what ranked it first
    similarity: float = 0.0      # embedding cosine: passage, or the FAQ entry's question
    sentence: float = 0.0        # embedding cosine: the best sentence of the best document
    heading: float = 0.0         # embedding cosine: the best title and heading of that document
    coverage: float = 0.0        # share of the question's words (IDF-weighted) the passage holds or means
    literal_coverage: float = 0.0  # share it holds word for word (typos repaired)
    meant: dict = field(default_factory=dict)   # words it lacks but means: how much dropping each cost
    keyword: float = 0.0         # BM25, squashed to 0..1
    margin: float = 0.0          # score over the next document's (min_margin)
    reranker: float | None = None  # the cross-encoder's score for the passage (then the relevance)
    faq: bool = False            # the passage is a FAQ entry
    missing: list[str] = field(default_factory=list)
    ranks: dict = field(default_factory=dict)   # where each search ranked it
    support: float | None = None  # the drafted answer's weakest sentence's support in the passage
    thresholds: dict = field(default_factory=dict)

    def public(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        return out


def rerank(question: list[Term], candidates: list[Candidate]) -> list[Scored]:
    """Best first: documents by their score (DOCUMENT_WEIGHTS); within a document, passages by
    similarity + SECTION_COVERAGE_WEIGHT * coverage."""
    documents: dict[str, DocumentScore] = {}
    scored = []
    for c in candidates:
        h = c.hit
        passage = set(terms(f"{h.title} {h.section} {h.text}"))
        similarity = max(c.cosine, c.faq_cosine)
        kw = c.bm25 / (c.bm25 + BM25_HALF) if c.bm25 > 0 else 0.0
        d = documents.setdefault(h.name, DocumentScore(h.name))
        d.similarity = max(d.similarity, similarity)
        d.heading = max(d.heading, c.heading_cosine)
        d.sentence = max(d.sentence, c.cosine if c.sentence_cosine is None else c.sentence_cosine)
        d.keyword = max(d.keyword, kw)
        absent = [t for t in question if t.term not in passage]
        scored.append(Scored(h, similarity, coverage(question, passage), kw, [t.asked for t in absent], c, d,
                             absent))
    return sorted(scored, key=lambda s: (-s.document.score, s.hit.name,
                                         -(s.similarity + SECTION_COVERAGE_WEIGHT * s.coverage)))


def signals_of(ranked: list[Scored]) -> Signals:
    if not ranked:
        return Signals()
    best = ranked[0]
    d = best.document
    if best.reranker is not None:
        relevance = best.reranker
        margin = best.reranker - next((s.reranker for s in ranked if s.hit.name != best.hit.name), 0.0)
    else:
        relevance = max(d.similarity, d.sentence, d.heading)
        margin = d.score - next((s.document.score for s in ranked if s.hit.name != best.hit.name), 0.0)
    return Signals(relevance=relevance, score=d.score, similarity=d.similarity, sentence=d.sentence,
                   heading=d.heading, coverage=best.coverage, literal_coverage=best.coverage,
                   keyword=best.keyword, margin=margin, reranker=best.reranker, faq=best.hit.faq,
                   missing=list(best.missing), ranks=dict(best.candidate.ranks))


def by_reranker(ranked: list[Scored], scores: list[float]) -> list[Scored]:
    """The passages a cross-encoder scored, best first: documents by their best passage's score,
    passages within a document by theirs."""
    best: dict[str, float] = {}
    for s, score in zip(ranked, scores):
        s.reranker = score
        best[s.hit.name] = max(best.get(s.hit.name, 0.0), score)
    scored = [s for s in ranked if s.reranker is not None]
    return sorted(scored, key=lambda s: (-best[s.hit.name], s.hit.name, -s.reranker))


def without(question: str, word: str) -> str:
    """The question with one of its words taken out."""
    return re.sub(rf"\b{re.escape(word)}\b", " ", question, flags=re.IGNORECASE)


def credit_meaning(signals: Signals, question: list[Term], absent: list[Term], drops: list[float]) -> None:
    """Count as covered the words the passage lacks but means: a word whose removal makes the
    question less similar to the passage (its nearest sentence or its heading) by MEANT_DROP or
    more ("tire" for a page on tyres, "coriander" for one on cilantro), where a word the passage
    does not address makes no difference or brings the question nearer."""
    meant = {t.asked: drop for t, drop in zip(absent, drops) if drop >= MEANT_DROP}
    total = sum(t.weight for t in question)
    if not meant or not total:
        return
    signals.meant = {w: round(drop, 4) for w, drop in meant.items()}
    signals.coverage = min(1.0, signals.literal_coverage
                           + sum(t.weight for t in absent if t.asked in meant) / total)
    signals.missing = [w for w in signals.missing if w not in meant]


def gate(signals: Signals, min_score: float, min_coverage: float, min_margin: float = -1.0) -> str:
    """"" when the best passage may answer, else why not."""
    if signals.relevance < min_score:
        return f"weak retrieval (relevance {signals.relevance:.2f} < {min_score:.2f})"
    if signals.coverage < min_coverage:
        missing = ", ".join(signals.missing[:5])
        return (f"the passage does not cover the question (coverage {signals.coverage:.2f} < "
                f"{min_coverage:.2f}; not in it: {missing})")
    if signals.margin < min_margin:
        return (f"another document is as near (margin {signals.margin:.2f} < {min_margin:.2f}: "
                "the best document hardly stands out)")
    return ""
