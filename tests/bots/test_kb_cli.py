"""`confab kb …` end to end in-process, on the real models: add, re-add, list, ask, eval, stats, remove."""
from __future__ import annotations

import json

import pytest

from bots.cli import main
from tests.conftest import requires_chat_model
from tests.engine.test_kb import needs_kb, write_docs


@needs_kb
@requires_chat_model
def test_kb_verbs(tmp_path, shared_models_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)            # no .env from the repo
    for k in list(__import__("os").environ):
        if k.startswith("CONFAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("CONFAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONFAB_MODELS_DIR", str(shared_models_dir))
    monkeypatch.setenv("CONFAB_MAX_TOKENS", "60")
    docs = write_docs(tmp_path / "docs")

    main(["kb", "add", str(docs)])
    assert "4 added, 0 updated, 0 unchanged, 0 failed" in capsys.readouterr().out
    main(["kb", "add", str(docs)])
    assert "0 added, 0 updated, 4 unchanged, 0 failed; 0 chunks embedded." in capsys.readouterr().out
    main(["kb", "list"])
    listed = capsys.readouterr().out
    assert "shipping.html" in listed and "https://help.example.com/shipping" in listed

    main(["kb", "ask", "How do I reset my password?", "--json"])
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["decision"] == "answer" and outcome["sources"] == ["faq.csv"] and outcome["answer"]

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"question": "How long does delivery take?", "source": "shipping.html"},
        {"question": "Who wrote War and Peace?", "source": None}]) + "\n")
    monkeypatch.setenv("CONFAB_KB_ANSWER_MODE", "excerpt")     # eval's gate, without generating
    main(["kb", "eval", str(questions)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "cited-source accuracy 1.00, out-of-scope silence 1.00"

    main(["kb", "remove", "notes.txt"])
    assert "Removed 1 document(s): notes.txt" in capsys.readouterr().out
    main(["kb", "stats", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 3 and stats["model"] == "all-minilm-l6-v2"
    with pytest.raises(SystemExit):
        main(["kb", "remove", "no-such-doc.md"])
