"""Which passage answers, and whether any does: reranking and the answerability gate.

No cross-encoder reranker ships in a package that installs offline (PyPI, Debian and npm were
searched for ms-marco, bge-reranker and cross-encoder weights: the reranking packages there
download their weights from a model hub at run time, or are trained rankers over other
features). In its place the fused candidates are reranked with the embedding model and the
knowledge base's own words:

- documents are ordered by `similarity`: the embedding model's cosine between the question and a
  passage under its title and heading, or the FAQ entry's own question, whichever is higher;
- within the best document, the passage that covers most of the question wins (an error code's
  own section rather than the page's introduction);
- the gate then measures the best document once more: `sentence`, the best cosine between the
  question and one sentence of its passages (a long passage dilutes less), and `heading`, the
  best cosine between the question and a passage's title and heading alone; it answers only
  when `relevance` = max(similarity, sentence, heading) reaches `min_score` and `coverage` (lexical.py: the IDF-weighted share of the question's words the
  passage holds, typos repaired) reaches `min_coverage`.

Coverage never picks between documents: the page holding most of the words of a question that
no page answers would win, and the gate would hear a coverage the question never had. On the
tuning knowledge base, sentence and heading similarity lifted answerable questions (0.29 ->
0.64 for a question against a long section) far more than unanswerable ones (cited accuracy
0.64 -> 0.71 at the same silence), and coverage is what tells
"a page about the same topic" from "a page that says what was asked". `margin`, the best
document's similarity over the next document's, is measured and may be gated on (`min_margin`),
but on the tuning knowledge bases it did not separate: right answers had a close second document
as often as wrong ones (0.00-0.04 for eight right answers, -0.05-0.02 for the three wrong sources), and
unanswerable questions that got through stood out by 0.07-0.38; calibration leaves it off. Two
other measures of coverage were tried there and lost to this one: words matched by meaning
(MiniLM word similarity: "tire" ~ "tyres", but also "android" ~ "app", "paypal" ~ "payment")
and coverage by the best document's top passages together. The thresholds come from
`confab kb eval --tune` on a team's own questions; `Signals` carries every number behind a
decision, for `kb ask --json`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.kb.index import Candidate, Hit
from engine.kb.lexical import Term, coverage, terms

BM25_HALF = 8.0                 # keyword score = bm25 / (bm25 + BM25_HALF), 0..1, shown only
SECTION_COVERAGE_WEIGHT = 0.5   # choosing among one document's passages: similarity + this * coverage
SENTENCE_PASSAGES = 4           # passages of the best document measured sentence by sentence


@dataclass
class Scored:
    hit: Hit
    similarity: float
    coverage: float
    keyword: float
    missing: list[str]          # question words the passage does not contain
    candidate: Candidate


@dataclass
class Signals:
    """What the gate measured for the best passage (and the drafted answer, when there is one)."""
    relevance: float = 0.0       # max(similarity, sentence, heading): what min_score is compared with
    similarity: float = 0.0      # embedding cosine: passage, or the FAQ entry's question
    sentence: float = 0.0        # embedding cosine: the best sentence of the best document
    heading: float = 0.0         # embedding cosine: the best title and heading of that document
    coverage: float = 0.0        # share of the question's words (IDF-weighted) in the passage
    keyword: float = 0.0         # BM25, squashed to 0..1
    margin: float = 0.0          # similarity over the best passage of another document (min_margin)
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
    """Best first: documents by their best passage's similarity; within a document, passages
    by similarity + SECTION_COVERAGE_WEIGHT * coverage."""
    scored = []
    for c in candidates:
        h = c.hit
        passage = set(terms(f"{h.title} {h.section} {h.text}"))
        cov = coverage(question, passage)
        kw = c.bm25 / (c.bm25 + BM25_HALF) if c.bm25 > 0 else 0.0
        missing = [t.asked for t in question if t.term not in passage]
        scored.append(Scored(h, max(c.cosine, c.faq_cosine), cov, kw, missing, c))
    by_doc: dict[str, float] = {}
    for s in scored:
        by_doc[s.hit.name] = max(by_doc.get(s.hit.name, -1.0), s.similarity)
    return sorted(scored, key=lambda s: (-by_doc[s.hit.name], s.hit.name,
                                         -(s.similarity + SECTION_COVERAGE_WEIGHT * s.coverage)))


def best_document(ranked: list[Scored]) -> list[Scored]:
    """The best document's passages, best first (for sentence similarity)."""
    return [s for s in ranked if s.hit.name == ranked[0].hit.name][:SENTENCE_PASSAGES] if ranked else []


def signals_of(ranked: list[Scored], sentence: float = 0.0) -> Signals:
    if not ranked:
        return Signals()
    best = ranked[0]
    other = max((s.similarity for s in ranked if s.hit.name != best.hit.name), default=0.0)
    heading = max((s.candidate.heading_cosine for s in best_document(ranked)), default=0.0)
    return Signals(max(best.similarity, sentence, heading), best.similarity, sentence, heading,
                   best.coverage, best.keyword, best.similarity - other, best.hit.faq, best.missing,
                   dict(best.candidate.ranks))


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
