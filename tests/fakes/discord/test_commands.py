"""Registering application commands on the Discord fake is checked as Discord checks it."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fakes.discord.conftest import AUTH
from tests.fakes.discord.protocol import ErrorCode

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_command_sync_validation(fake):
    api = f"{fake.api_base}/applications/{fake.application_id}/commands"
    async with aiohttp.ClientSession() as http:
        async with http.put(api, json=[{"name": "Ask", "description": "x"}], headers=AUTH) as r:
            assert r.status == 400 and (await r.json())["code"] == ErrorCode.INVALID_FORM_BODY
        async with http.put(api, json=[{"name": "ask", "description": ""}], headers=AUTH) as r:
            assert r.status == 400
        async with http.put(api, json=[{"name": "ask", "description": "d", "options": [
                {"type": 3, "name": "a", "description": "a"},
                {"type": 3, "name": "b", "description": "b", "required": True}]}], headers=AUTH) as r:
            assert r.status == 400
        async with http.put(f"{fake.api_base}/applications/1/commands", json=[], headers=AUTH) as r:
            assert r.status == 403
