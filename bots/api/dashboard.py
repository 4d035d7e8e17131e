"""The operator's dashboard at /dashboard: queue, running jobs, models, errors, usage, cancel.

    GET  /dashboard                      the page (static HTML + JS, no framework)
    GET  /dashboard/state                one snapshot, JSON
    GET  /dashboard/events               the same snapshot, live, as server-sent events
    POST /dashboard/jobs/{id}/cancel     cancel a queued or running job
    POST /dashboard/login                {"key": API_KEY} -> a session cookie
    POST /dashboard/logout

When API keys are configured, every route but the page and login needs either
`Authorization: Bearer KEY` or the session cookie that login sets. The cookie holds a random
session token (never the key itself), and is Secure, HttpOnly and SameSite=Strict; state-changing
requests must also carry `X-Confab-Dashboard: 1`, which no cross-site form can send.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import secrets
import time
from importlib import resources

from aiohttp import web

from bots.api.errors import error_response
from bots.api.keys import ENGINE, SETTINGS
from bots.api.validate import read_json
from engine.runtime.limits import principal
from engine.runtime.scheduler import order
from engine.safety.exposure import open_to_network

log = logging.getLogger(__name__)

COOKIE = "confab_dashboard"
SESSION_S = 12 * 3600
MAX_SESSIONS = 1000
MAX_STREAMS = 32           # dashboards watching at once
TICK_S = 1.0               # how often the live view is refreshed
HEARTBEAT_S = 15.0
SHOW_QUEUED = 200          # queued jobs listed (the counts by class are always complete)
RECENT_ERRORS = 20
# whose errors the dashboard shows: the engine, the models, every door and the web server
LOGGED = ("engine", "models", "bots", "voice", "confab", "aiohttp.server", "aiohttp.web")

SESSIONS = web.AppKey("dashboard_sessions", dict)
STREAMS = web.AppKey("dashboard_streams", set)
ERRORS = web.AppKey("dashboard_errors", collections.deque)
HANDLER = web.AppKey("dashboard_log_handler", logging.Handler)
WARNINGS = web.AppKey("dashboard_warnings", list)


# -- access ---------------------------------------------------------------------------------------

def _authorized(request: web.Request) -> bool:
    keys = request.app[SETTINGS].api_keys
    if not keys:
        return True
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        return any(hmac.compare_digest(token, k) for k in keys)
    session = request.cookies.get(COOKIE, "")
    sessions = request.app[SESSIONS]
    expires = sessions.get(session) if session else None
    if expires is None:
        return False
    if expires < time.time():
        sessions.pop(session, None)
        return False
    return True


def _denied() -> web.Response:
    return error_response(401, "The dashboard needs an API key: sign in on the page, or send "
                          "'Authorization: Bearer KEY'.", "invalid_request_error", "invalid_api_key")


def _needs_header(request: web.Request) -> web.Response | None:
    if request.headers.get("X-Confab-Dashboard") != "1":
        return error_response(403, "Send the header 'X-Confab-Dashboard: 1' with dashboard actions.",
                              "permission_error", "missing_header")
    return None


async def login(request: web.Request) -> web.Response:
    if refused := _needs_header(request):
        return refused
    keys = request.app[SETTINGS].api_keys
    key = str((await read_json(request)).get("key", ""))
    if keys and not any(hmac.compare_digest(key, k) for k in keys):
        await asyncio.sleep(0.2)   # a little friction for guessing
        return error_response(401, "That is not one of Confab's API keys.", "invalid_request_error",
                              "invalid_api_key")
    response = web.json_response({"ok": True, "auth": bool(keys)})
    if keys:
        sessions = request.app[SESSIONS]
        now = time.time()
        for token in [t for t, exp in sessions.items() if exp < now]:
            del sessions[token]
        while len(sessions) >= MAX_SESSIONS:
            sessions.pop(next(iter(sessions)))
        token = secrets.token_urlsafe(32)
        sessions[token] = now + SESSION_S
        response.set_cookie(COOKIE, token, max_age=SESSION_S, path="/dashboard", secure=True,
                            httponly=True, samesite="Strict")
        engine = request.app[ENGINE]
        await engine.store.audit("dashboard", "login", {"from": request.remote or ""})
    return response


async def logout(request: web.Request) -> web.Response:
    if refused := _needs_header(request):
        return refused
    request.app[SESSIONS].pop(request.cookies.get(COOKIE, ""), None)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/dashboard")
    return response


# -- what the page shows ----------------------------------------------------------------------------

async def snapshot(app: web.Application) -> dict:
    engine = app[ENGINE]
    sched = engine.dispatcher     # where jobs run: here, or on workers (then nothing is here)
    now = sched.clock()
    handles = {h.id: h for h in engine.active_jobs()}
    waiting = sched.waiting
    queued = []
    ordered = order(waiting, sched.resident_names(), now, sched.policy) if len(waiting) <= 512 else waiting
    for position, entry in enumerate(ordered[:SHOW_QUEUED], 1):
        handle = handles.get(entry.job_id)
        queued.append({"id": entry.job_id, "kind": handle.job.kind if handle else "?",
                       "model": entry.model, "user": entry.user, "class": entry.cls,
                       "position": position, "waited_s": round(entry.waited(now), 1)})
    running = []
    for entry in sched.running:
        handle = handles.get(entry.job_id)
        running.append({"id": entry.job_id, "kind": handle.job.kind if handle else "?",
                        "model": entry.model, "user": entry.user, "class": entry.cls,
                        "device": handle.device if handle else None,
                        "status": handle.status if handle else "running",
                        "waited_s": round(entry.waited(now), 1)})
    # Jobs this process holds that it does not run itself (a scale-out front: they wait in
    # Redis and run on workers) are listed from their handles.
    listed = {j["id"] for j in queued} | {j["id"] for j in running}
    by_class = {str(k): v for k, v in sched.depth_by_class().items()}
    for handle in handles.values():
        if handle.id in listed:
            continue
        origin = handle.job.origin
        row = {"id": handle.id, "kind": handle.job.kind, "model": handle.job.model,
               "user": origin.user_key, "class": handle.priority,
               "waited_s": round(max(0.0, time.time() - handle.job.created_at), 1)}
        if handle.status == "running":
            running.append({**row, "device": handle.device, "status": "running"})
        elif len(queued) < SHOW_QUEUED:
            queued.append({**row, "position": len(queued) + 1})
            by_class[str(handle.priority)] = by_class.get(str(handle.priority), 0) + 1
    devices = []
    resident = sched.resident()
    for device, budget in sched.budgets.items():
        models = [{"name": r.name, "bytes": r.size, "busy": r.busy, "pinned": r.pinned,
                   "idle_s": round(max(0.0, now - r.last_used), 1)} for r in resident if r.device == device]
        devices.append({"device": device, "budget_bytes": budget,
                        "used_bytes": sum(m["bytes"] for m in models), "models": models})
    per_user: dict[str, dict] = {}
    for u in engine.limits.usage():
        per_user[u.who] = {"user": u.who, "gpu_s_today": u.gpu_s_today, "budget_s": u.budget_s,
                           "requests_last_minute": u.requests_last_minute,
                           "requests_today": u.requests_today, "active_jobs": 0}
    for h in handles.values():
        who = principal(h.job.origin)
        row = per_user.setdefault(who, {"user": who, "gpu_s_today": 0.0,
                                        "budget_s": engine.limits.daily_gpu_s,
                                        "requests_last_minute": 0, "requests_today": 0,
                                        "active_jobs": 0})
        row["active_jobs"] += 1
    failures = [{"at": f["finished"], "message": (f["error"] or "")[:500],
                 "source": f"job {f['id']} ({f['kind']}, {f['model']}, {f['user']})"}
                for f in await engine.store.recent_failures(RECENT_ERRORS)]
    errors = sorted(failures + list(app[ERRORS]), key=lambda e: -e["at"])[:RECENT_ERRORS]
    return {"time": time.time(), "warnings": app[WARNINGS], "queue_by_class": by_class,
            "queue_max": sched.policy.queue_max, "queued": queued, "running": running,
            "devices": devices, "errors": errors, "usage": list(per_user.values())}


class _RecentErrors(logging.Handler):
    """Keeps the last few error log records for the page (failed jobs come from the store)."""

    def __init__(self, sink: collections.deque):
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.appendleft({"at": record.created, "source": record.name,
                                  "message": record.getMessage()[:500]})
        except Exception:   # a log handler must never raise
            pass


# -- routes -----------------------------------------------------------------------------------------

async def page(request: web.Request) -> web.Response:
    html = resources.files("bots.api").joinpath("static/dashboard.html").read_text("utf-8")
    return web.Response(text=html, content_type="text/html", headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                                   "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


async def state(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _denied()
    return web.json_response(await snapshot(request.app), headers={"Cache-Control": "no-store"})


async def events(request: web.Request) -> web.StreamResponse:
    if not _authorized(request):
        return _denied()
    streams = request.app[STREAMS]
    if len(streams) >= MAX_STREAMS:
        return error_response(429, f"{MAX_STREAMS} dashboards are open already.", "rate_limit_error",
                              "too_many_streams", headers={"Retry-After": "30"})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    task = asyncio.current_task()
    streams.add(task)
    last, quiet = None, 0.0
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            data = await snapshot(request.app)
            body = json.dumps({k: v for k, v in data.items() if k != "time"}, sort_keys=True)
            if body != last:
                await response.write(b"event: state\ndata: " + json.dumps(data).encode() + b"\n\n")
                last, quiet = body, 0.0
            elif quiet >= HEARTBEAT_S:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            await asyncio.sleep(TICK_S)
            quiet += TICK_S
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        streams.discard(task)
    return response


async def cancel(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _denied()
    if refused := _needs_header(request):
        return refused
    engine = request.app[ENGINE]
    job_id = request.match_info["job_id"]
    if engine.handle(job_id) is None:
        return error_response(404, f"No queued or running job '{job_id}'.", "invalid_request_error",
                              "not_found")
    cancelled = await engine.cancel(job_id)
    await engine.store.audit("dashboard", "cancel", {"job": job_id, "cancelled": cancelled})
    return web.json_response({"id": job_id, "cancelled": cancelled})


async def _on_shutdown(app: web.Application) -> None:
    for task in list(app[STREAMS]):
        task.cancel()


async def _on_cleanup(app: web.Application) -> None:
    for name in LOGGED:
        logging.getLogger(name).removeHandler(app[HANDLER])


def setup(app: web.Application) -> None:
    app[SESSIONS] = {}
    app[STREAMS] = set()
    app[ERRORS] = collections.deque(maxlen=RECENT_ERRORS)
    app[HANDLER] = _RecentErrors(app[ERRORS])
    app[WARNINGS] = [w for w in [open_to_network(app[SETTINGS])] if w]   # settings do not change
    for name in LOGGED:
        logging.getLogger(name).addHandler(app[HANDLER])
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/state", state)
    app.router.add_get("/dashboard/events", events)
    app.router.add_post("/dashboard/login", login)
    app.router.add_post("/dashboard/logout", logout)
    app.router.add_post("/dashboard/jobs/{job_id}/cancel", cancel)
