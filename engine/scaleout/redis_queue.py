"""The scheduler's queue in Redis, for one front host and a worker on each GPU host.

Every decision is one Lua script, so it is atomic in Redis:

- `push`: the front queues a job (idempotent: a job already queued, leased or finished is left
  alone). Arrival times are Redis's clock, so order and class-2 promotion mean the same on
  every host.
- `take`: a worker takes the next job by the same rules as `scheduler.pick_next` (class, then
  affinity to the models *that worker* has loaded, with aging; class 2 promoted after its bound),
  and holds it on a lease. Aging counts what affinity cost a job, as in-process: `finish`
  charges a job's run time to the older jobs of its class it went before. Leases that ran out go back to the queue first, keeping their arrival
  time, so a job of a dead worker runs again.
- `renew`: a running worker extends its lease (and hears whether the job was cancelled).
- `publish` / `finish`: events and the result go back to the front through one stream; both
  are refused unless the caller still holds the lease (its `worker|attempt` token), so a worker
  that lost its job can never deliver a second answer.
- `cancel`: drops a queued job, or flags a running one for its worker.

Keys (under a prefix, "confab" by default): waiting, inflight, job (hashes by job id), lease
(sorted set of expiry times), owner, attempt, results (hashes), cancel (set), seq (counter),
events (stream), wake (list the workers block on).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterable

from engine.errors import BackendMissing
from engine.runtime.scheduler import Entry, Policy

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 100_000

_NOW = """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

PUSH = _NOW + """
-- KEYS: waiting job seq results inflight wake ; ARGV: id cls model user job_json
local id = ARGV[1]
local done = redis.call('HGET', KEYS[4], id)
if done then return {2, done} end
if redis.call('HEXISTS', KEYS[1], id) == 1 or redis.call('HEXISTS', KEYS[5], id) == 1 then
  return {0, ''}
end
local seq = redis.call('INCR', KEYS[3])
local entry = cjson.encode({id = id, cls = tonumber(ARGV[2]), model = ARGV[3], user = ARGV[4],
                            arrived = string.format('%.6f', clock()), seq = seq})
redis.call('HSET', KEYS[1], id, entry)
redis.call('HSET', KEYS[2], id, ARGV[5])
redis.call('LPUSH', KEYS[6], '1')
redis.call('LTRIM', KEYS[6], 0, 63)
return {1, ''}
"""

# The same rules as scheduler.pick_next, over the waiting hash.
TAKE = _NOW + """
-- KEYS: waiting inflight lease owner attempt events job
-- ARGV: worker resident_json aging_s promote_s lease_s now_override dry_run
local now = clock()
if ARGV[6] ~= '' then now = tonumber(ARGV[6]) end
if ARGV[7] ~= '1' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    local raw = redis.call('HGET', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
    if raw then
      redis.call('HSET', KEYS[1], id, raw)
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', %d, '*', 'job', id, 'kind', 'requeued',
                 'attempt', redis.call('HGET', KEYS[5], id) or '0', 'data', '')
    end
  end
end
local raws = redis.call('HVALS', KEYS[1])
if #raws == 0 then return false end
local resident = {}
for _, m in ipairs(cjson.decode(ARGV[2])) do resident[m] = true end
local aging, promote = tonumber(ARGV[3]), tonumber(ARGV[4])
local all = {}
for i, raw in ipairs(raws) do
  local e = cjson.decode(raw)
  e.arrived = tonumber(e.arrived)
  e.passed = tonumber(e.passed) or 0
  e.raw = raw
  all[i] = e
end
local function before(a, b)
  if a.arrived ~= b.arrived then return a.arrived < b.arrived end
  return a.seq < b.seq
end
local function oldest(list, keep)
  local best = nil
  for _, e in ipairs(list) do
    if keep(e) and (best == nil or before(e, best)) then best = e end
  end
  return best
end
local choice = oldest(all, function(e) return e.cls == 0 end)
if choice == nil then
  local function in_pool(e)
    return e.cls == 1 or (e.cls == 2 and now - e.arrived >= promote)
  end
  local first = oldest(all, in_pool)
  if first == nil then
    choice = oldest(all, function(e) return true end)
  else
    -- aging: what affinity cost a job, the run time of later jobs that went before it
    choice = oldest(all, function(e) return in_pool(e) and e.passed >= aging end)
    if choice == nil then
      choice = oldest(all, function(e) return in_pool(e) and resident[e.model] end) or first
    end
    if choice.cls == 2 then
      local c = choice
      choice = oldest(all, function(e) return e.cls == 1 and before(e, c) end) or c
    end
  end
end
if ARGV[7] == '1' then return {choice.id, '0', ''} end
local attempt = redis.call('HINCRBY', KEYS[5], choice.id, 1)
redis.call('HDEL', KEYS[1], choice.id)
redis.call('HSET', KEYS[2], choice.id, choice.raw)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), choice.id)
redis.call('HSET', KEYS[4], choice.id, ARGV[1] .. '|' .. attempt)
return {choice.raw, tostring(attempt), redis.call('HGET', KEYS[7], choice.id) or ''}
""" % EVENTS_MAXLEN

RENEW = _NOW + """
-- KEYS: lease owner cancel ; ARGV: id token lease_s   -> 0 lost, 1 held, 2 held and cancelled
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', clock() + tonumber(ARGV[3]), ARGV[1])
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 2 end
return 1
"""

PUBLISH = """
-- KEYS: owner events ; ARGV: id token attempt first data...
-- first: the number of the attempt's first event here ('' for none), so that a batch sent again
-- (its reply lost with the connection) is recognised by the front and not shown twice
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
for i = 5, #ARGV do
  if ARGV[4] == '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', %d, '*', 'job', ARGV[1], 'kind', 'event',
               'attempt', ARGV[3], 'data', ARGV[i])
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', %d, '*', 'job', ARGV[1], 'kind', 'event',
               'attempt', ARGV[3], 'data', ARGV[i], 'n', tonumber(ARGV[4]) + i - 5)
  end
end
return 1
""" % (EVENTS_MAXLEN, EVENTS_MAXLEN)

FINISH = """
-- KEYS: owner lease inflight job attempt results events cancel waiting
-- ARGV: id token attempt kind data service_s
local id = ARGV[1]
if redis.call('HGET', KEYS[1], id) ~= ARGV[2] then return 0 end
-- It went before the older jobs still waiting in its class (class 2 counts as the class 1 it
-- is promoted into): charge its run time to them, as Scheduler.finished does.
local raw = redis.call('HGET', KEYS[3], id)
local service = tonumber(ARGV[6]) or 0
if raw and service > 0 then
  local f = cjson.decode(raw)
  local farr, fcls, fseq = tonumber(f.arrived), tonumber(f.cls), tonumber(f.seq)
  local waiting = redis.call('HGETALL', KEYS[9])
  for i = 1, #waiting, 2 do
    local w = cjson.decode(waiting[i + 1])
    local warr = tonumber(w.arrived)
    if math.min(tonumber(w.cls), 1) <= fcls and (warr < farr or (warr == farr and tonumber(w.seq) < fseq)) then
      w.passed = string.format('%%.17g', (tonumber(w.passed) or 0) + service)
      redis.call('HSET', KEYS[9], waiting[i], cjson.encode(w))
    end
  end
end
redis.call('HSET', KEYS[6], id, ARGV[5])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', %d, '*', 'job', id, 'kind', ARGV[4],
           'attempt', ARGV[3], 'data', ARGV[5])
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
redis.call('SREM', KEYS[8], id)
return 1
""" % EVENTS_MAXLEN

CANCEL = """
-- KEYS: waiting job cancel inflight ; ARGV: id   -> 1 dropped from the queue, 2 flagged, 0 unknown
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[1])
  return 2
end
return 0
"""


@dataclass(frozen=True)
class Taken:
    """A job a worker holds on a lease."""
    entry: Entry
    attempt: int
    token: str
    job: str            # the job, as engine.wire JSON


def entry_of(raw: str | bytes) -> Entry:
    d = json.loads(raw)
    return Entry(d["id"], int(d["cls"]), d["model"], d["user"], float(d["arrived"]), int(d["seq"]),
                 passed_s=float(d.get("passed") or 0.0))


class RedisQueue:
    """The Redis side of the queue; `url` is redis://host:port/db."""

    def __init__(self, url: str, prefix: str = "confab", client=None):
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:
                raise BackendMissing("redis", "redis") from None
            client = aioredis.from_url(url, decode_responses=True)
        self.url, self.redis, self.prefix = url, client, prefix
        k = lambda name: f"{prefix}:{name}"   # noqa: E731
        self.waiting, self.inflight, self.jobs = k("waiting"), k("inflight"), k("job")
        self.lease, self.owner, self.attempts = k("lease"), k("owner"), k("attempt")
        self.results, self.cancels, self.seq = k("results"), k("cancel"), k("seq")
        self.events, self.wake = k("events"), k("wake")
        self._push = client.register_script(PUSH)
        self._take = client.register_script(TAKE)
        self._renew = client.register_script(RENEW)
        self._publish = client.register_script(PUBLISH)
        self._finish = client.register_script(FINISH)
        self._cancel = client.register_script(CANCEL)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    # -- the front's side --------------------------------------------------------------------

    async def push(self, job_id: str, cls: int, model: str, user: str, job_json: str) -> str | None:
        """Queue a job; returns its finished result's JSON if a worker already finished it."""
        return (await self.requeue(job_id, cls, model, user, job_json))[1]

    async def requeue(self, job_id: str, cls: int, model: str, user: str,
                      job_json: str) -> tuple[bool, str | None]:
        """Queue a job unless Redis holds it already: (whether it was queued now, its finished
        result's JSON if a worker already finished it)."""
        state, done = await self._push(
            keys=[self.waiting, self.jobs, self.seq, self.results, self.inflight, self.wake],
            args=[job_id, cls, model, user, job_json])
        return int(state) == 1, (done if int(state) == 2 else None)

    async def server_run(self) -> str:
        """Which run of the Redis server answers: a new one after every restart."""
        return (await self.redis.info("server"))["run_id"]

    async def cancel(self, job_id: str) -> int:
        return int(await self._cancel(keys=[self.waiting, self.jobs, self.cancels, self.inflight],
                                      args=[job_id]))

    async def forget(self, job_id: str) -> None:
        """The front has the result in its store: drop Redis's copy."""
        await self.redis.hdel(self.results, job_id)

    async def read_events(self, last_id: str, block_ms: int = 1000, count: int = 500):
        """[(stream id, fields)] after last_id, waiting up to block_ms for the first."""
        out = await self.redis.xread({self.events: last_id}, count=count, block=block_ms)
        return out[0][1] if out else []

    async def last_event_id(self) -> str:
        info = await self.redis.xrevrange(self.events, count=1)
        return info[0][0] if info else "0-0"

    async def depth(self) -> int:
        return int(await self.redis.hlen(self.waiting))

    async def waiting_entries(self) -> list[Entry]:
        return [entry_of(raw) for raw in await self.redis.hvals(self.waiting)]

    # -- a worker's side ---------------------------------------------------------------------

    async def take(self, worker: str, resident: Iterable[str], policy: Policy,
                   lease_s: float) -> Taken | None:
        got = await self._take(
            keys=[self.waiting, self.inflight, self.lease, self.owner, self.attempts, self.events, self.jobs],
            args=[worker, json.dumps(sorted(resident)), repr(float(policy.aging_s)),
                  repr(float(policy.promote_s)), repr(float(lease_s)), "", "0"])
        if not got:
            return None
        raw, attempt, job = got
        return Taken(entry_of(raw), int(attempt), f"{worker}|{attempt}", job)

    async def peek(self, resident: Iterable[str], policy: Policy, now: float) -> str | None:
        """The id `take` would choose at `now`, without taking it (for tests and tools)."""
        got = await self._take(
            keys=[self.waiting, self.inflight, self.lease, self.owner, self.attempts, self.events, self.jobs],
            args=["", json.dumps(sorted(resident)), repr(float(policy.aging_s)),
                  repr(float(policy.promote_s)), "0", repr(float(now)), "1"])
        return got[0] if got else None

    async def wait_for_work(self, timeout_s: float) -> None:
        await self.redis.blpop([self.wake], timeout=timeout_s)

    async def renew(self, taken: Taken, lease_s: float) -> int:
        return int(await self._renew(keys=[self.lease, self.owner, self.cancels],
                                     args=[taken.entry.job_id, taken.token, repr(float(lease_s))]))

    async def publish(self, taken: Taken, events_json: list[str], first: int | None = None) -> bool:
        """`first`: the number of the first of these events in the attempt (0, 1, ...), sent
        with each so that the front drops a batch it already has."""
        if not events_json:
            return True
        return bool(await self._publish(keys=[self.owner, self.events],
                                        args=[taken.entry.job_id, taken.token, taken.attempt,
                                              "" if first is None else first, *events_json]))

    async def finish(self, taken: Taken, kind: str, data_json: str, service_s: float = 0.0) -> bool:
        """kind is "done" or "failed"; False when the lease was lost (someone else runs it).
        `service_s`, the job's run time, is charged to the older jobs it went before (aging)."""
        return bool(await self._finish(
            keys=[self.owner, self.lease, self.inflight, self.jobs, self.attempts, self.results,
                  self.events, self.cancels, self.waiting],
            args=[taken.entry.job_id, taken.token, taken.attempt, kind, data_json, repr(float(service_s))]))
