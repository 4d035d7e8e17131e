"""What the doors' defaults tests ask (issue 19, point 1): questions the offline SmolLM2 gets
right at its own sampling defaults (its card's temperature 0.2, top_p 0.9), judged by the rate
over all of them, not by one answer.

Chosen by measurement, six answers each on llama-server with those defaults: these six were
right 6/6. Left out: France (right in about half: at 0.2 the first token is often "La" or "Le"
and the answer wanders off in French), Spain ("El Salvador ..."), Italy (answers in Italian),
Portugal (0/6), and Germany, which a busy batch of concurrent slots tipped into German once."""
from __future__ import annotations

CAPITALS = [("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("England", "London"),
            ("China", "Beijing"), ("Greece", "Athens")]
# A little below what was measured through the doors (see each test), so that a miss or two by
# sampling passes, and a door that changes what the model is asked (its prompt, its sampling, a
# cut-off answer, a limit met) does not.
BAR = 0.8


def rate(answers: list[str], capitals: list[str]) -> float:
    """The share of answers that name their capital."""
    assert len(answers) == len(capitals) and answers
    return sum(capital in answer for answer, capital in zip(answers, capitals)) / len(answers)
