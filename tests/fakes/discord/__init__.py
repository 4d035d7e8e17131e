"""A loopback fake of Discord (REST API v10, attachment CDN and gateway) for tests.

The real ``discord.py`` client is pointed at it with :func:`point_discord_py_at`; nothing
of Confab is mocked.  The fake is meant to be as strict as Discord, never kinder:

* REST needs ``Authorization: Bot <token>`` and a ``DiscordBot`` User-Agent, answers JSON
  with a content type of exactly ``application/json`` and Discord's JSON error codes
  (50035 invalid form body, 50006 empty message, 10008 unknown message, 40060 already
  acknowledged, 5015x voice-message rules, ...), and sends rate-limit headers on every
  answer.  A client that ignores them gets a real 429 (with ``Via`` and ``Retry-After``,
  as discord.py requires to tell it from a Cloudflare ban).
* Attachment URLs are signed (``ex``/``is``/``hm``) as on Discord's CDN: a URL whose query
  was stripped or altered is refused.
* The gateway speaks op 10/2/0/1/11/6/7/9, numbers dispatches per session, buffers them
  while the client is away and replays them on RESUME, compresses with ``zlib-stream``
  (or ``zstd-stream``) when asked, applies intents (an event the client did not ask for
  is not sent; without MESSAGE_CONTENT, message content is blanked as Discord does), and
  echoes the bot's own messages back as MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE.
* Interactions must be acknowledged once, within ``interaction_ack_deadline`` seconds of
  their dispatch (3 s, as on Discord); follow-ups need an acknowledged interaction.

Payload builders (``message_create_*``, ``interaction_*``) produce the shapes documented in
Discord's API reference; ``tests/fixtures/discord/*.json`` holds one example of each with
a ``_source`` note, and the self-test checks that the builders still match them.

Where this package had to choose a behaviour Discord does not document (an exact error
code, a bucket size) it says so in a comment.

Usage::

    fake = DiscordFake()
    await fake.start()
    with point_discord_py_at(fake):          # for the whole life of the client
        task = asyncio.create_task(client.start(fake.token))
        await fake.wait_for_identify()
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("hello"))
        reply = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages")
        await client.close()
    await fake.stop()

discord.py waits ``guild_ready_timeout`` (2 s by default) after the last GUILD_CREATE
before ``on_ready``, and sleeps 5 s before every IDENTIFY but the first; pass
``guild_ready_timeout=0.1`` to the client in tests.

One module a surface, each a part of the one ``DiscordFake`` (server.py):

- ``server``: the aiohttp app and its routes, the shared state, ids and bounded waits;
- ``rest``: the REST route table, authentication, rate limits, bodies, switches and recording,
  and the routes for users, members, DMs and the application;
- ``gateway``: HELLO / IDENTIFY / RESUME, heartbeats, compression, intents and dispatch;
- ``messages``: the message object, its checks, ``message_create_*`` and the message routes;
- ``interactions``: ``interaction_*``, callbacks, modals and follow-up webhooks;
- ``commands``: registering application commands;
- ``files``: attachments on the signed CDN and the upload-URL flow;
- ``world``: users, guilds, roles, channels, threads and permissions;
- ``protocol``: Discord's numbers (intents, flags, error codes), error answers, records;
- ``pointing``: pointing discord.py at the fake (:func:`point_discord_py_at`).
"""

from tests.fakes.discord.server import DiscordFake

__all__ = ["DiscordFake"]
