"""The writing templates: /translate, /promo and /write in the console, and /v1/templates."""
from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
from aiohttp import web

from bots.api.app import create_app
from bots.common.commands import Commands, Request
from bots.console.console import ConsoleReply
from bots.skills import collect, parse_slots, register_commands
from engine import BadRequest, Engine, Origin, UserError
from engine.flows import templates as T
from tests.conftest import make_settings, requires_chat_model


def test_translate_arguments():
    assert T.split_translate_arg("fr,de: Hello") == {"languages": "fr,de", "text": "Hello"}
    assert T.split_translate_arg("Bonjour: ça va?") == {"languages": "en", "text": "Bonjour: ça va?"}
    assert T.parse_languages("French and de, pt-BR") == ["French", "German", "Portuguese"]
    with pytest.raises(BadRequest, match="klingon"):
        T.split_translate_arg("fr,klingon: Hello")
    parts = T.get("translate").render({"text": "Hello", "languages": "fr,de,ja"})
    assert [p.label for p in parts] == ["French", "German", "Japanese"]
    assert all("Hello" in p.messages[-1].content for p in parts)


def test_template_slots_are_checked():
    promo = T.get("promo")
    with pytest.raises(BadRequest, match="needs: product"):
        promo.check({"size": "1 l"})
    with pytest.raises(BadRequest, match="output"):
        promo.check(dict(product="x", size="s", container="c", price="1", store="s", setting="s", output="video"))
    with pytest.raises(BadRequest, match="no slot colour"):
        promo.check({"colour": "red"})
    assert T.split_write_arg("news our new office") == {"kind": "announcement", "topic": "our new office"}
    with pytest.raises(BadRequest):
        T.split_write_arg("poem about cats")
    assert parse_slots("product=Lemonade; size=330 ml") == {"product": "Lemonade", "size": "330 ml"}


async def test_promo_without_a_form_says_what_it_needs():
    class Plain:            # a reply with neither form nor ask, like a plain webhook
        pass
    with pytest.raises(UserError, match="needs product"):
        await collect(T.get("promo"), {"size": "1 l"}, Plain())

    class Modal:            # what a Slack or Discord adapter provides
        def __init__(self):
            self.shown = None

        async def form(self, template, values):
            self.shown = (template.name, dict(values))
            return {"product": "Tea", "container": "tin", "price": "4", "store": "deli",
                    "setting": "rainy day", "output": "text"}
    modal = Modal()
    got = await collect(T.get("promo"), {"size": "250 g"}, modal)
    assert modal.shown == ("promo", {"size": "250 g"}) and got["product"] == "Tea" and got["size"] == "250 g"


@pytest.fixture
async def engine(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path, shared_models_dir, max_tokens=40))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def run_console(engine, text, typed=""):
    commands = Commands(engine)
    register_commands(commands)
    out = io.StringIO()
    reply = ConsoleReply(out, engine.settings.data_path / "console", io.StringIO(typed))
    request = Request(Origin(platform="console", user="me", is_dm=True), "console:me", text)
    await asyncio.wait_for(commands.handle(request, reply), 150)
    return out.getvalue()


@requires_chat_model
async def test_translate_into_several_languages_in_one_request(engine):
    out = await run_console(engine, "/translate fr,de: Good morning")
    assert "French: " in out and "German: " in out
    assert out.index("French: ") < out.index("German: ")
    assert len(out.split("French: ")[1].split("German: ")[0].strip()) > 0


@requires_chat_model
async def test_promo_collects_its_slots_through_console_prompts(engine):
    typed = "Lemonade\n330 ml\ncan\n$1.50\nbeach kiosk\nsunny beach in summer\nboth\n"
    out = await run_console(engine, "/promo", typed)
    for label in ("Product: ", "Size (e.g. 500 ml, large): ", "Make text, image or both? (text/image/both) [text]: "):
        assert label in out
    tail = out.split("[text]: ")[1]
    assert "No image model is installed" in tail               # the poster needs an image model
    assert len(tail.split("🧩")[0].strip()) > 20                  # the promotional text


@requires_chat_model
async def test_write_and_the_named_prompts_api(engine):
    out = await run_console(engine, "/write product a solar phone charger")
    assert len(out.strip()) > 20 and "⚠️" not in out
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=150)) as s:
            async with s.get(f"{base}/templates") as r:
                names = [t["id"] for t in (await r.json())["data"]]
            assert names == ["translate", "promo", "write"]
            async with s.post(f"{base}/templates/translate",
                              json={"variables": {"text": "Thank you", "languages": "es,it"}}) as r:
                data = await r.json()
            assert r.status == 200, data
            assert [o["label"] for o in data["outputs"]] == ["Spanish", "Italian"]
            ids = r.headers["X-Confab-Job-Id"].split(", ")      # one job per language
            assert len(ids) == 2 and all([(await engine.store.get_job(i))["status"] == "done" for i in ids])
            assert data["usage"]["completion_tokens"] > 0
            async with s.post(f"{base}/templates/promo", json={"variables": {"product": "x"}}) as r:
                err = await r.json()
            assert r.status == 400 and "needs" in err["error"]["message"]
            async with s.post(f"{base}/templates/nope", json={"variables": {}}) as r:
                assert r.status == 400
    finally:
        await runner.cleanup()


def test_modal_shapes_for_slack_and_discord():
    from bots.common.forms import discord_modal, discord_values, slack_modal, slack_values
    promo = T.get("promo")
    view = slack_modal(promo, {"product": "Lemonade"}, {"channel": "C1"})
    assert view["type"] == "modal" and view["callback_id"] == "confab_template:promo"
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert list(blocks) == [s.name for s in promo.slots]
    assert blocks["product"]["element"]["initial_value"] == "Lemonade"
    assert blocks["output"]["element"]["type"] == "static_select"
    assert blocks["output"]["element"]["initial_option"]["value"] == "text"
    state = {"product": {"product": {"type": "plain_text_input", "value": "Lemonade"}},
             "size": {"size": {"type": "plain_text_input", "value": "330 ml"}},
             "output": {"output": {"type": "static_select", "selected_option": {"value": "both"}}}}
    assert slack_values(promo, state) == {"product": "Lemonade", "size": "330 ml", "output": "both"}
    modal = discord_modal(promo, {"price": "$1.50"})
    inputs = [row["components"][0] for row in modal["components"]]
    assert [i["custom_id"] for i in inputs] == ["product", "size", "container", "store", "setting"]
    assert all(i["type"] == 4 and len(i["label"]) <= 45 for i in inputs) and len(inputs) <= 5
    assert discord_values(promo, {"product": "Tea", "bogus": "x", "size": " "}) == {"product": "Tea"}
