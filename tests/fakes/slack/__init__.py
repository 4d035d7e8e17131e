"""A loopback fake of Slack for tests: Web API, file hosting, Socket Mode and HTTP-mode signing.

Point the real libraries at it::

    fake = SlackFake()
    await fake.start()
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    app = AsyncApp(client=client, signing_secret=fake.signing_secret)
    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    await fake.wait_connected()
    env_ids = await fake.send_mention("<@UBOT> hello")

The fake is meant to be as strict as Slack, never kinder: wrong token types, missing text, unknown
channels, messages that do not exist, stale trigger ids and unauthenticated file downloads fail the
way they fail on Slack (``ok: false`` with Slack's error code, or Slack's HTML login page for
files). Where Slack's behaviour is silent but almost surely a bug in the client (a reply to a
thread that does not exist, an upload whose length differs from the one announced, a late ack),
the fake does what Slack does and also appends a line to ``fake.problems``.

Everything binds 127.0.0.1 port 0, everything is recorded, and every wait is bounded.

One module a surface, each a part of the one ``SlackFake`` (server.py):

- ``server``: the aiohttp app and its routes, the shared state, recording and bounded waits;
- ``web_api``: ``/api/{method}`` (arguments, tokens, switches) and the chat, conversations,
  users, usergroups and reactions methods; ``blocks``: Block Kit validation;
- ``socket_mode``: apps.connections.open, envelopes, acknowledgements, disconnects;
- ``http_mode``: the v0 signature and signed requests to an app's URL;
- ``events``: what people do, as events, and the echo of the bot's own messages;
- ``interactions``: slash commands, block actions, views.open, response URLs;
- ``files``: hosted files, the external upload flow and authenticated downloads;
- ``workspace``: users, channels and the message store;
- ``protocol``: the error answer, the record of a call, fixtures, ids, multipart bodies.
"""

from tests.fakes.slack.server import SlackFake

__all__ = ["SlackFake"]
