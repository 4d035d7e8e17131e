"""Prometheus metrics, one registry per engine (so tests and several engines never collide)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("confab_queue_depth", "Jobs waiting, per priority class",
                                 ["priority_class"], registry=r)
        self.running = Gauge("confab_jobs_running", "Jobs running now", registry=r)
        self.jobs = Counter("confab_jobs_total", "Jobs finished, by kind and outcome",
                            ["kind", "outcome"], registry=r)
        self.rejected = Counter("confab_jobs_rejected_total", "Jobs refused at the door, by reason",
                                ["reason"], registry=r)
        self.loads = Counter("confab_model_loads_total", "Model loads", ["model"], registry=r)
        self.evictions = Gauge("confab_model_evictions", "Model evictions so far", registry=r)
        self.resident = Gauge("confab_model_resident_bytes", "Memory held by a loaded model",
                              ["model", "device"], registry=r)
        self.wait = Histogram("confab_job_queue_seconds", "Time from submit to start",
                              ["kind", "priority_class"], buckets=BUCKETS, registry=r)
        self.latency = Histogram("confab_job_seconds", "Time from submit to result",
                                 ["kind"], buckets=BUCKETS, registry=r)
        self.tokens = Counter("confab_tokens_generated_total", "Tokens generated", ["model"], registry=r)
        self.tokens_per_s = Gauge("confab_tokens_per_second", "Decode speed of the last chat job",
                                  ["model"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
