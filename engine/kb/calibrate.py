"""Thresholds from data: the gate's `min_score`, `min_coverage` and `min_margin` that a team's own
questions call for.

Each question of an evaluation file gives one `Observation`: which document it needs (None when
no document answers it), which document the best passage came from, and the passage's relevance,
coverage and margin. `calibrate` tries every combination of thresholds on a grid and keeps those
that stay quiet on at least `target_silence` of the unanswerable questions, then the ones among
them that cite the right source most often; of those it takes the least use of the margin (a
signal that only counts when it pays), then the score and coverage in the middle of the range
(so that a question a little unlike the tuning ones does not fall off an edge).
"""
from __future__ import annotations

from dataclasses import dataclass

MARGIN_OFF = -1.0
MARGINS = [MARGIN_OFF] + [m / 100 for m in range(-5, 21)]


@dataclass(frozen=True)
class Observation:
    expected: str | None       # the document that answers it; None: no document does
    best: str                  # the best passage's document
    relevance: float
    coverage: float
    margin: float = 1.0        # observations saved before the margin was measured never fail it
    reranker: str = ""         # the cross-encoder whose score the relevance is ("": none)


@dataclass(frozen=True)
class Calibration:
    min_score: float
    min_coverage: float
    accuracy: float            # cited-source accuracy on the answerable questions
    silence: float             # share of the unanswerable ones left alone
    feasible: bool             # the silence target was reached
    min_margin: float = MARGIN_OFF


def rates(obs: list[Observation], min_score: float, min_coverage: float,
          min_margin: float = MARGIN_OFF) -> tuple[float, float]:
    answerable = [o for o in obs if o.expected]
    unanswerable = [o for o in obs if not o.expected]

    def speaks(o: Observation) -> bool:
        return o.relevance >= min_score and o.coverage >= min_coverage and o.margin >= min_margin
    right = sum(speaks(o) and o.best == o.expected for o in answerable)
    quiet = sum(not speaks(o) for o in unanswerable)
    return (right / len(answerable) if answerable else 1.0,
            quiet / len(unanswerable) if unanswerable else 1.0)


def calibrate(obs: list[Observation], target_silence: float = 0.9, margins: bool = True) -> Calibration:
    grid = [(s / 100, c / 50, m) for s in range(20, 96) for c in range(0, 51)
            for m in (MARGINS if margins else [MARGIN_OFF])]
    scored = [(s, c, m, *rates(obs, s, c, m)) for s, c, m in grid]
    feasible = [x for x in scored if x[4] >= target_silence]
    pool = feasible or [max(scored, key=lambda x: (x[4], x[3]))]
    top = max(x[3] for x in pool)
    best = [x for x in pool if x[3] == top and (feasible or x[4] == pool[0][4])]
    m = min(x[2] for x in best)
    best = [x for x in best if x[2] == m]
    scores = sorted({x[0] for x in best})
    s = scores[len(scores) // 2]
    covs = sorted(x[1] for x in best if x[0] == s)
    c = covs[len(covs) // 2]
    accuracy, silence = rates(obs, s, c, m)
    return Calibration(s, c, accuracy, silence, bool(feasible), m)
