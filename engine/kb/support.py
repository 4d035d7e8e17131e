"""Grounded support answers: retrieve, gate on measured signals, answer with a source or stand down.

    question -> hybrid search (vectors, FAQ questions, BM25; fused by reciprocal rank)
             -> rerank (rank.py; a cross-encoder's scores when one is installed) -> the gate:
                relevance >= min_score (min_rerank with a cross-encoder), coverage >= min_coverage,
                margin >= min_margin?
             -> the chat model drafts an answer from the best passage only -> every sentence
                supported by it?
             -> answer citing that passage | the passage quoted with its source (fallback "excerpt")
             -> otherwise: hand-over text or silence, as configured

Drafting (`Policy.drafting`):
- "extract" (the default): the chat model writes its answer under a grammar that only lets it
  copy the passage's own sentences: one, or two in a row, around the sentences nearest the
  question (EXTRACT_NEAREST). The model chooses which; it cannot add a word. Measured with
  SmolLM2-135M, free drafts from a passage were nearly never supported by it (0.27-0.72 against
  0.75 on the tests' own questions: it answers from what it thinks it knows, "use a tracking app
  like MailTrack"), so a tiny model's free draft is a hazard; its choice of sentences is not.
- "free": the model writes in its own words, for a model that keeps to its source.

Support is measured either way (`_grounding`): each sentence of the draft must reach
`grounding_min` both in cosine similarity (the embedding model) with some sentence of the cited
passage and in the share of its words that the passage or the question holds (sentences that
only restate the question support nothing). When a draft falls short, the passage itself is the
safe answer (or, with `fallback` "none", the desk stands down). Every outcome carries the
`Signals` behind it and the draft, posted or not.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field

from engine.errors import BackendMissing, UnknownModel, UserError
from engine.jobs import ChatJob, ChatMessage, Origin
from engine.kb.index import Hit, KnowledgeBase, embed_text
from engine.kb.lexical import terms
from engine.kb.parse import sentences
from engine.kb.rank import (
    MEANT_WORDS,
    Scored,
    Signals,
    by_reranker,
    credit_meaning,
    gate,
    rerank,
    signals_of,
    without,
)
from engine.work.embeddings import embed
from engine.work.rerank import score_passages

DECISIONS = ("answer", "silent", "handover")
log = logging.getLogger(__name__)
RESTATEMENT = 0.9   # an answer sentence this close to the question only repeats it
EXTRACT_NEAREST = 3  # an extract holds one of the passage's sentences this near the question
RERANK_PASSAGES = 20  # the best passages found that a cross-encoder reranker scores

_GREETINGS = {"hi", "hello", "hey", "hiya", "yo", "morning", "good morning", "good afternoon",
              "good evening", "thanks", "thank you", "thanks a lot", "thank you so much", "thx", "ty",
              "cheers", "ok", "okay", "k", "great", "cool", "nice", "awesome", "perfect", "bye",
              "goodbye", "see you", "lol", "got it", "sounds good", "no worries", "np", "welcome",
              "good night", "gm", "gn", "sure", "yes", "no", "yep", "nope", "done", "solved",
              "that worked", "it works", "works now", "all good"}
_ASKING = ("how", "what", "why", "when", "where", "who", "which", "can", "could", "is", "are", "do",
           "does", "did", "should", "would", "will", "may", "might", "any", "anyone", "anybody",
           "help", "is there", "where's", "what's", "how's", "whats")
_PROBLEM = ("can't", "cannot", "cant", "unable", "error", "problem", "issue", "not working",
            "doesn't", "doesnt", "won't", "wont", "fails", "failed", "failing", "broken", "trouble",
            "stuck", "need help", "how to", "wrong", "missing", "lost", "forgot")


def is_question(text: str) -> bool:
    """Whether a support channel message asks for something (greetings, thanks and emoji don't)."""
    plain = re.sub(r"<[^>]+>|:[a-z0-9_+-]+:", " ", text or "")       # mentions, :emoji:
    letters = [c for c in plain if unicodedata.category(c)[0] in "LN"]
    if len(letters) < 3:
        return False
    lowered = " ".join(re.sub(r"[^\w\s'?]", " ", plain.lower()).split())
    bare = lowered.rstrip("?! .")
    if bare in _GREETINGS or all(w in _GREETINGS for w in bare.split()):
        return False
    words = bare.split()
    if "?" in plain:
        return len(words) >= 2
    if words and (words[0] in _ASKING or " ".join(words[:2]) in _ASKING):
        return len(words) >= 3
    return len(words) >= 4 and any(p in lowered for p in _PROBLEM)


@dataclass(frozen=True)
class Policy:
    min_score: float = 0.47             # the best document's relevance (rank.py), 0-1
    min_coverage: float = 0.30          # share of the question's words the best passage holds
    min_margin: float = -1.0            # best document's score over the next one's (-1: off)
    grounding_min: float = 0.75
    when_unsure: str = "handover"       # handover | silent
    handover_text: str = "Someone from the support team will follow up here."
    top_k: int = 20                     # passages each search finds before fusion and reranking
    answer_mode: str = "generate"       # generate | excerpt (quote the best passage, no chat model)
    fallback: str = "excerpt"           # when a generated answer is not grounded: excerpt | none
    drafting: str = "extract"           # extract (the passage's own sentences) | free
    max_tokens: int = 160
    reranker: str = ""                  # a cross-encoder: "" the first installed, "off" none, or a name
    min_rerank: float = 0.5             # with a reranker: its score for the best passage, 0-1

    @classmethod
    def from_settings(cls, settings, **overrides) -> "Policy":
        base = dict(min_score=settings.kb_min_score, min_coverage=settings.kb_min_coverage,
                    min_margin=settings.kb_min_margin, drafting=settings.kb_drafting,
                    grounding_min=settings.kb_grounding_min,
                    when_unsure=settings.kb_when_unsure, handover_text=settings.kb_handover_text,
                    top_k=settings.kb_top_k, answer_mode=settings.kb_answer_mode,
                    reranker=settings.kb_reranker, min_rerank=settings.kb_min_rerank)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class Citation:
    title: str
    section: str
    link: str
    source: str          # the document's file name

    def label(self) -> str:
        where = f"{self.title} › {self.section}" if self.section else self.title
        return f"{where} ({self.link})" if self.link else where


@dataclass
class Outcome:
    decision: str                      # answer | silent | handover
    text: str                          # what to post ("" when silent)
    answer: str = ""                   # the answer without its sources
    citations: list[Citation] = field(default_factory=list)
    score: float = 0.0                 # the best passage's relevance
    grounding: float = 0.0             # weakest sentence's support (generated answers)
    reason: str = ""                   # why: "answered", "weak retrieval", "not grounded", ...
    outcome_id: int | None = None      # for feedback
    signals: Signals = field(default_factory=Signals)
    generated: bool = False            # the chat model wrote the answer (else: a quoted passage)
    best: str = ""                     # the best passage's document, answered or not
    draft: str = ""                    # the chat model's draft, posted or not

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(c.source for c in self.citations))

    def public(self) -> dict:
        return {"decision": self.decision, "answer": self.answer, "sources": self.sources,
                "generated": self.generated, "reason": self.reason, "best_passage": self.best,
                "draft": self.draft, "signals": self.signals.public()}


def passage_sentences(text: str) -> list[str]:
    """Sentences as a reader sees them: the lines of a paragraph joined (a document's line
    breaks are not sentence ends), list items and paragraphs apart."""
    out = []
    for para in re.split(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)", text or ""):
        para = " ".join(para.split()).strip(" -*•")
        out += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", para) if s]
    return out


def extracts(sentences: list[str], nearest: list[int]) -> list[str]:
    """What an extract may be: each of the `nearest` sentences alone, or with the sentence before
    or after it."""
    spans = set()
    for i in nearest:
        spans |= {(i, i + 1), (max(0, i - 1), i + 1), (i, min(len(sentences), i + 2))}
    return [" ".join(sentences[a:b]) for a, b in sorted(spans)]


def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def extract_grammar(choices: list[str]) -> str:
    """A GBNF grammar (llama.cpp's) whose only sentences are `choices`, word for word."""
    return "root ::= " + " | ".join(_gbnf_literal(c) for c in choices) + "\n"


def _citation(hit: Hit) -> Citation:
    return Citation(hit.title, hit.section, hit.link, hit.name)


def format_reply(answer: str, citations: list[Citation]) -> str:
    if not citations:
        return answer
    lines = [answer, "", "Sources:"] + [f"• {c.label()}" for c in citations]
    return "\n".join(lines)


def build_prompt(question: str, hit: Hit) -> list[ChatMessage]:
    context = hit.title + (f" — {hit.section}" if hit.section else "") + f"\n{hit.text}"
    user = (f"Answer the question using only the documentation below. Answer in one to three "
            f"sentences.\n\nDocumentation:\n{context}\n\nQuestion: {question}")
    # SmolLM2 stays on course with exactly this system message (see MODELS.md)
    return [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", user)]


class SupportDeskAnswerer:
    """Answers support questions from a knowledge base through the engine (class 1 jobs)."""

    def __init__(self, engine, kb: KnowledgeBase, chat_model: str = "", embedding_model: str = ""):
        self.engine, self.kb = engine, kb
        self.chat_model, self.embedding_model = chat_model, embedding_model

    async def _embed(self, texts: list[str], origin: Origin):
        return await embed(self.engine, texts, origin, model=self.embedding_model)

    async def answer(self, question: str, policy: Policy, origin: Origin | None = None,
                     log: bool = True) -> Outcome:
        origin = origin or Origin(platform="api")
        outcome = await self._decide(question.strip(), policy, origin)
        if log:
            outcome.outcome_id = await self.kb.log_outcome(origin.platform, origin.channel, origin.thread,
                                                           question, outcome.decision, outcome.score,
                                                           outcome.sources)
        return outcome

    def _unsure(self, policy: Policy, reason: str, signals: Signals, best: str = "") -> Outcome:
        if policy.when_unsure == "silent":
            return Outcome("silent", "", score=signals.relevance, grounding=signals.support or 0.0,
                           reason=reason, signals=signals, best=best)
        return Outcome("handover", policy.handover_text, score=signals.relevance,
                       grounding=signals.support or 0.0, reason=reason, signals=signals, best=best)

    async def _decide(self, question: str, policy: Policy, origin: Origin) -> Outcome:
        if not question:
            return Outcome("silent", "", reason="empty")
        qvec = (await self._embed([question], origin))[0]
        candidates, vocab = await self.kb.candidates(question, qvec, policy.top_k)
        await self._measure_sentences(qvec, candidates, origin)
        asked = vocab.question(question)
        ranked = rerank(asked, candidates)
        reranker = self._reranker(policy)
        if reranker and ranked:
            top = ranked[:RERANK_PASSAGES]
            scores = await score_passages(self.engine, question,
                                          [embed_text(s.hit.title, s.hit.section, s.hit.text) for s in top],
                                          origin, model=reranker)
            ranked = by_reranker(top, scores)
        signals = signals_of(ranked)
        if ranked and ranked[0].absent:
            await self._measure_meaning(question, asked, ranked[0], signals, origin)
        min_score = policy.min_rerank if reranker else policy.min_score
        signals.thresholds = {"min_score": min_score, "min_coverage": policy.min_coverage,
                              "min_margin": policy.min_margin, "grounding_min": policy.grounding_min,
                              "drafting": policy.drafting, "reranker": reranker or ""}
        if not ranked:
            return self._unsure(policy, "the knowledge base is empty", signals)
        best = ranked[0].hit
        why = gate(signals, min_score, policy.min_coverage, policy.min_margin)
        if why:
            return self._unsure(policy, why, signals, best.name)
        if policy.answer_mode == "excerpt":
            return self._excerpt(best, signals, "quoted the source")
        options, choices, max_tokens = {}, [], policy.max_tokens
        if policy.drafting == "extract":
            sentences = passage_sentences(best.text)
            if sentences:
                vectors = await self._embed([question] + sentences, origin)
                nearest = sorted(int(i) for i in (-(vectors[1:] @ vectors[0])).argsort()[:EXTRACT_NEAREST])
                choices = extracts(sentences, nearest)
                options["grammar"] = extract_grammar(choices)
                # room for the longest choice (a token holds two characters or more), so that an
                # extract is never cut off mid-sentence
                max_tokens = max(max_tokens, max(map(len, choices)) // 2 + 16)
        try:
            handle = await self.engine.submit(ChatJob(model=self.chat_model, origin=origin,
                                                      messages=build_prompt(question, best),
                                                      max_tokens=max_tokens, temperature=0.0,
                                                      seed=0, repeat_penalty=1.1, options=options))
            generated = (await handle.result()).text.strip()
        except (UnknownModel, BackendMissing) as e:   # no chat model here: quote the source
            log.warning("support answers quote their sources: %s", e.message)
            return self._excerpt(best, signals, "quoted the source (no chat model)")
        except UserError as e:      # refused: e.g. an OpenAI-compatible engine elsewhere that takes no grammar
            log.warning("the chat model could not draft a support answer: %s", e.message)
            return self._excerpt(best, signals, f"quoted the source (the chat model refused the draft: {e.message})")
        if choices and generated and generated not in choices and any(c.startswith(generated) for c in choices):
            signals.support = 0.0
            outcome = self._excerpt(best, signals, "the drafted extract was cut short; quoted the passage instead")
            outcome.draft, outcome.grounding = generated, 0.0
            return outcome
        support = await self._grounding(question, generated, best, origin)
        signals.support = support
        if generated and support >= policy.grounding_min:
            cites = [_citation(best)]
            how = "the model chose its sentences" if policy.drafting == "extract" else "in the model's words"
            return Outcome("answer", format_reply(generated, cites), generated, cites, signals.relevance,
                           support, f"answered from the passage ({how})", signals=signals,
                           generated=True, best=best.name, draft=generated)
        why = (f"the drafted answer was not supported by the passage ({support:.2f} < "
               f"{policy.grounding_min:.2f})")
        if policy.fallback == "excerpt":
            outcome = self._excerpt(best, signals, why + "; quoted the passage instead")
        else:
            outcome = self._unsure(policy, why, signals, best.name)
        outcome.draft, outcome.grounding = generated, support
        return outcome

    def _excerpt(self, hit: Hit, signals: Signals, reason: str) -> Outcome:
        text = hit.text.strip()
        if len(text) > 700:
            text = text[:700].rsplit(" ", 1)[0] + " …"
        cite = [_citation(hit)]
        return Outcome("answer", format_reply(text, cite), text, cite, signals.relevance, 1.0, reason,
                       signals=signals, best=hit.name)

    def _reranker(self, policy: Policy) -> str | None:
        """The cross-encoder that reranks, if any (UnknownModel when the one named is not installed)."""
        if policy.reranker == "off":
            return None
        if policy.reranker:
            return self.engine.resolve_model(policy.reranker, "reranker").name
        installed = sorted(m.name for m in self.engine.installed("reranker"))
        return installed[0] if installed else None

    async def _measure_sentences(self, qvec, candidates, origin: Origin) -> None:
        """Sentence similarity for passages stored before sentences were (a knowledge base from
        an older Confab, until `confab kb add` re-embeds it)."""
        missing = [c for c in candidates if c.sentence_cosine is None]
        said = [sentences(c.hit.text) for c in missing]
        if not any(said):
            return
        vectors = await self._embed([s for ss in said for s in ss], origin)
        q = qvec / (float((qvec @ qvec) ** 0.5) or 1.0)
        at = 0
        for c, ss in zip(missing, said):
            if ss:
                v = vectors[at:at + len(ss)]
                c.sentence_cosine = float(((v @ q) / ((v * v).sum(axis=1) ** 0.5).clip(min=1e-9)).max())
                at += len(ss)

    async def _measure_meaning(self, question: str, asked, best: Scored, signals: Signals,
                               origin: Origin) -> None:
        """How much each word the best passage lacks brings the question nearer to the passage
        (rank.credit_meaning)."""
        hit = best.hit
        heading = " — ".join(x for x in (hit.title, hit.section) if x)
        passage = sentences(hit.text) + ([heading] if heading else [])
        absent = sorted(best.absent, key=lambda t: -t.weight)[:MEANT_WORDS]
        variants = [without(question, t.asked) for t in absent]
        vectors = await self._embed([question] + variants + passage, origin)
        n = 1 + len(variants)
        nearest = (vectors[:n] @ vectors[n:].T).max(axis=1)
        credit_meaning(signals, asked, absent, [float(nearest[0] - x) for x in nearest[1:]])

    async def _grounding(self, question: str, answer: str, hit: Hit, origin: Origin) -> float:
        """How well the cited passage supports the answer: its weakest sentence's support, which
        is the lower of its best similarity to a sentence of the passage and the share of its
        words (numbers, names, anything but stop words) that the passage or the question holds.
        Meaning alone let a fluent sentence with one invented detail through ("enter a new
        username" for a password reset link: 0.77); a word the passage never uses is a claim it
        does not make. Sentences that only restate the question support nothing."""
        claims = [c for c in passage_sentences(answer) if len(c.split()) >= 3]
        if not claims:
            return 0.0
        support = passage_sentences(hit.text) or [hit.text]
        vectors = await self._embed([question] + claims + support, origin)
        q, c, s = vectors[0], vectors[1:len(claims) + 1], vectors[len(claims) + 1:]
        informative = (c @ q) < RESTATEMENT
        if not informative.any():
            return 0.0
        known = set(terms(f"{hit.title} {hit.section} {hit.text} {question}"))
        lexical = []
        for claim in claims:
            words = terms(claim, joined=False)
            lexical.append(sum(w in known for w in words) / len(words) if words else 1.0)
        sims = (c @ s.T).max(axis=1)
        return float(min(min(float(x), w) for x, w, keep in zip(sims, lexical, informative) if keep))
