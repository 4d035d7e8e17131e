"""The shared command set's entry points: a typed line is parsed into the same `Call` that a
platform with typed options (a Discord slash command) hands to `Commands.run`."""
from __future__ import annotations

from types import SimpleNamespace

from bots.common.commands import Call, Commands, Request, parse
from engine import Origin


class Said:
    def __init__(self):
        self.said: list[str] = []

    async def say(self, text: str) -> None:
        self.said.append(text)

    async def private(self, text: str) -> None:
        self.said.append(text)


def test_a_line_is_parsed_into_a_call():
    assert parse("/Translate fr: Hello ") == Call("translate", "fr: Hello")
    assert parse("what is a GGUF file?") == Call("ask", "what is a GGUF file?")
    assert parse("/queue") == Call("queue")


async def test_typed_options_reach_the_handler_as_keyword_arguments():
    commands = Commands(SimpleNamespace(settings=SimpleNamespace()))
    got = []

    async def echo(cmds, request, arg, reply, languages: str = "") -> None:
        got.append((arg, languages))
    commands.register("echo", echo)
    request, reply = Request(Origin(), "conversation"), Said()
    await commands.handle(Request(Origin(), "conversation", "/echo fr: Hello"), reply)
    await commands.run(request, Call("echo", "Hello", {"languages": "fr"}), reply)
    assert got == [("fr: Hello", ""), ("Hello", "fr")]
    await commands.run(request, Call("nothing"), reply)
    assert reply.said == ["I don't know the command /nothing. Try /help."]
