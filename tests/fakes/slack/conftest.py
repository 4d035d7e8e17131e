"""What the Slack fake's self-tests share: the fake, started and stopped, and a real Web API client on it."""

from __future__ import annotations

import pytest
import pytest_asyncio
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import SlackFake

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest_asyncio.fixture
async def fake():
    async with SlackFake() as f:
        yield f


def client_for(fake: SlackFake, token=None, **kw) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token if token is None else token, base_url=fake.api_url, **kw)


async def api_error(coro) -> str:
    with pytest.raises(SlackApiError) as e:
        await coro
    return e.value.response["error"]
