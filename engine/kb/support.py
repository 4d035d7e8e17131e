"""Grounded support answers: retrieve, gate on confidence, answer with citations or stand down.

    question -> is_question? -> retrieve (top k chunks) -> best score >= min_score?
             -> generate an answer from the chunks -> every sentence supported by them?
             -> answer with citations | the best passage quoted (fallback "excerpt")
             -> otherwise: hand-over text or silence, as configured

Grounding is measured with the same embedding model: each sentence of the generated answer
must reach `grounding_min` cosine similarity with some sentence of the retrieved text. Small
chat models wander; when they do, the passage itself is the safe answer.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import logging

from ..errors import BackendMissing, UnknownModel
from ..jobs import ChatJob, ChatMessage, Origin
from .index import Hit, KnowledgeBase

DECISIONS = ("answer", "silent", "handover")
log = logging.getLogger(__name__)
RESTATEMENT = 0.9   # an answer sentence this close to the question only repeats it

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
    min_score: float = 0.4
    grounding_min: float = 0.75
    when_unsure: str = "handover"       # handover | silent
    handover_text: str = "Someone from the support team will follow up here."
    top_k: int = 4
    answer_mode: str = "generate"       # generate | excerpt (quote the best passage, no chat model)
    fallback: str = "excerpt"           # when a generated answer is not grounded: excerpt | none
    max_tokens: int = 160

    @classmethod
    def from_settings(cls, settings, **overrides) -> "Policy":
        base = dict(min_score=settings.kb_min_score, grounding_min=settings.kb_grounding_min,
                    when_unsure=settings.kb_when_unsure, handover_text=settings.kb_handover_text,
                    top_k=settings.kb_top_k, answer_mode=settings.kb_answer_mode)
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
    score: float = 0.0                 # best retrieval score
    grounding: float = 0.0             # weakest sentence's support (generated answers)
    reason: str = ""                   # why: "answered", "weak retrieval", "not grounded", ...
    outcome_id: int | None = None      # for feedback

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(c.source for c in self.citations))

    def public(self) -> dict:
        return {"decision": self.decision, "answer": self.answer, "sources": self.sources}


def split_sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip(" -*•\t") for p in parts if len(p.strip().split()) >= 3]


def _citation(hit: Hit) -> Citation:
    return Citation(hit.title, hit.section, hit.link, hit.name)


def format_reply(answer: str, citations: list[Citation]) -> str:
    if not citations:
        return answer
    lines = [answer, "", "Sources:"] + [f"• {c.label()}" for c in citations]
    return "\n".join(lines)


def build_prompt(question: str, hits: list[Hit]) -> list[ChatMessage]:
    context = "\n\n".join(f"[{i}] {h.title}" + (f" — {h.section}" if h.section else "") + f"\n{h.text}"
                          for i, h in enumerate(hits, 1))
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
        from ..embeddings import embed
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

    def _unsure(self, policy: Policy, reason: str, score: float, grounding: float = 0.0) -> Outcome:
        if policy.when_unsure == "silent":
            return Outcome("silent", "", score=score, grounding=grounding, reason=reason)
        return Outcome("handover", policy.handover_text, score=score, grounding=grounding, reason=reason)

    async def _decide(self, question: str, policy: Policy, origin: Origin) -> Outcome:
        if not question:
            return Outcome("silent", "", reason="empty")
        qvec = (await self._embed([question], origin))[0]
        hits = await self.kb.search(qvec, policy.top_k)
        best = hits[0].score if hits else 0.0
        strong = [h for h in hits if h.score >= policy.min_score]
        if not strong:
            return self._unsure(policy, "weak retrieval", best)
        if policy.answer_mode == "excerpt":
            return self._excerpt(strong[0], best)
        try:
            handle = await self.engine.submit(ChatJob(model=self.chat_model, origin=origin,
                                                      messages=build_prompt(question, strong[:2]),
                                                      max_tokens=policy.max_tokens, temperature=0.0,
                                                      seed=0, repeat_penalty=1.1))
            generated = (await handle.result()).text.strip()
        except (UnknownModel, BackendMissing) as e:   # no chat model here: quote the source
            log.warning("support answers quote their sources: %s", e.message)
            return self._excerpt(strong[0], best)
        grounding, used = await self._grounding(question, generated, strong[:2], origin)
        if generated and grounding >= policy.grounding_min:
            cites = list(dict.fromkeys(_citation(strong[i]) for i in sorted(used)))
            return Outcome("answer", format_reply(generated, cites), generated, cites, best, grounding,
                           "answered")
        if policy.fallback == "excerpt":
            out = self._excerpt(strong[0], best)
            out.grounding, out.reason = grounding, "not grounded; quoted the source"
            return out
        return self._unsure(policy, "not grounded", best, grounding)

    def _excerpt(self, hit: Hit, best: float) -> Outcome:
        text = hit.text.strip()
        if len(text) > 700:
            text = text[:700].rsplit(" ", 1)[0] + " …"
        cite = [_citation(hit)]
        return Outcome("answer", format_reply(text, cite), text, cite, best, 1.0, "quoted the source")

    async def _grounding(self, question: str, answer: str, hits: list[Hit],
                         origin: Origin) -> tuple[float, set[int]]:
        """The weakest answer sentence's best similarity to a retrieved sentence, and which hits
        supported the answer. Sentences that only restate the question support nothing."""
        claims = split_sentences(answer)
        if not claims:
            return 0.0, set()
        support, owner = [], []
        for i, h in enumerate(hits):
            for s in split_sentences(h.text) or [h.text]:
                support.append(s)
                owner.append(i)
        vectors = await self._embed([question] + claims + support, origin)
        q, c, s = vectors[0], vectors[1:len(claims) + 1], vectors[len(claims) + 1:]
        informative = (c @ q) < RESTATEMENT
        if not informative.any():
            return 0.0, set()
        sims = c[informative] @ s.T
        used = {owner[j] for j in sims.argmax(axis=1)}
        return float(sims.max(axis=1).min()), used
