"""engine/safety/safe_json.py: the nesting it measures in a JSON text is the nesting Python's parser
finds, whatever the strings hold; too deep is refused before parsing, at any depth."""
from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.safety import safe_json
from engine.storage.store import Store

# Strings full of what could fool a scan: brackets, quotes, backslashes, escapes, non-ASCII.
tricky_text = st.text(alphabet=st.sampled_from(list('[]{}"\\/,: ab\n\u00e9\u2028\U0001f600')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40)


@settings(max_examples=300, derandomize=True, database=None)
@given(value=json_values, ascii_only=st.booleans())
def test_depth_of_the_text_is_the_depth_of_the_value(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert safe_json.depth(text) == safe_json.depth(text.encode("utf-8")) == safe_json.nesting(value)
    assert safe_json.loads(text) == json.loads(text)


def nest(levels: int, leaf: str = "1", kind: str = "[") -> str:
    if kind == "[":
        return "[" * levels + leaf + "]" * levels
    return '{"a":' * levels + leaf + "}" * levels


@pytest.mark.parametrize("kind", ["[", "{"])
def test_the_bound_is_exact_and_holds_far_beyond_the_interpreters_limit(kind):
    assert safe_json.loads(nest(safe_json.MAX_DEPTH, kind=kind)) is not None
    for levels in (safe_json.MAX_DEPTH + 1, 500, 10_000, 200_000):
        with pytest.raises(safe_json.TooDeep, match="more than 64 levels"):
            safe_json.loads(nest(levels, kind=kind))
    with pytest.raises(ValueError):           # TooDeep is a ValueError, as parse errors are
        safe_json.loads(nest(10_000, kind=kind).encode())


def test_brackets_inside_strings_do_not_count():
    body = json.dumps({"messages": [{"role": "user", "content": "[" * 10_000 + '\\"{' * 500}]})
    assert safe_json.depth(body) == 3
    assert safe_json.loads(body)["messages"][0]["content"].startswith("[[[")


def test_dumps_refuses_what_loads_would_refuse():
    deep: list = []
    for _ in range(safe_json.MAX_DEPTH - 1):
        deep = [deep]
    assert safe_json.nesting(deep) == safe_json.MAX_DEPTH
    with pytest.raises(safe_json.TooDeep):
        safe_json.dumps({"event": deep})
    assert safe_json.loads(safe_json.dumps(deep)) == deep


async def test_the_store_keeps_no_event_it_could_not_read_back_and_skips_unreadable_ones(tmp_path):
    """Kept events are read back with the same bound; one that cannot be read (kept by an older
    Confab, or damaged) is closed with a warning instead of stopping the replay."""
    store = Store(tmp_path / "confab.db")
    try:
        deep: dict = {}
        for _ in range(safe_json.MAX_DEPTH + 1):
            deep = {"blocks": deep}
        with pytest.raises(safe_json.TooDeep):
            await store.add_event("slack:C1:1", "slack", {"kind": "message", "event": deep})
        assert await store.add_event("slack:C1:2", "slack", {"kind": "message", "event": {"text": "hi"}})
        assert await store.add_event("slack:C1:3", "slack", {"kind": "message", "event": {"text": "later"}})
        db = sqlite3.connect(tmp_path / "confab.db")
        db.execute("UPDATE events SET payload=? WHERE id='slack:C1:2'", (nest(5000),))
        db.commit()
        events = await store.open_events("slack", before=float("inf"))
        assert [key for key, _ in events] == ["slack:C1:3"]
        assert db.execute("SELECT status FROM events WHERE id='slack:C1:2'").fetchone() == ("closed",)
        assert db.execute("SELECT count(*) FROM events WHERE id='slack:C1:1'").fetchone() == (0,)
        db.close()
    finally:
        store.close()
