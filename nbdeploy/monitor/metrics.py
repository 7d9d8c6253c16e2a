"""Read BentoML's ``/metrics`` (Prometheus text) into the figures the panel shows.

Counters are cumulative, so rates and windowed percentiles come from the difference between two
scrapes; percentiles are interpolated inside the latency histogram's buckets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

ENDPOINT = "/predict"
#: The model's JSON routes, counted together as the panel's requests (the score routes are /predict's kin).
ENDPOINTS = frozenset({ENDPOINT, "/predict_proba", "/decision_function"})


@dataclass(frozen=True)
class Scrape:
    at: float
    requests: dict[str, float] = field(default_factory=dict)  # status code -> count
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count (all statuses)
    in_progress: float = 0.0
    dropped_records: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.requests.values())

    @property
    def errors(self) -> float:
        return sum(v for k, v in self.requests.items() if not k.startswith("2"))


def parse(text: str, at: float | None = None) -> Scrape:
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    in_progress = dropped = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("endpoint", ENDPOINT) not in ENDPOINTS:
                continue
            if sample.name == "bentoml_service_request_total":
                code = labels.get("http_response_code", "?")
                requests[code] = requests.get(code, 0.0) + sample.value
            elif sample.name == "bentoml_service_request_duration_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == "bentoml_service_request_in_progress":
                in_progress += sample.value
            elif sample.name.startswith("nbdeploy_records_dropped"):
                dropped += sample.value
    return Scrape(time.time() if at is None else at, requests, buckets, in_progress, dropped)


def scrape(url: str, client: httpx.Client | None = None, timeout: float = 5.0) -> Scrape:
    getter = client.get if client is not None else httpx.get
    resp = getter(f"{url}/metrics", timeout=timeout)
    resp.raise_for_status()
    return parse(resp.text)


def quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile (seconds) from cumulative histogram buckets, interpolated linearly in a bucket."""
    bounds = sorted(buckets)
    if not bounds:
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 0.0
            return prev_bound + (bound - prev_bound) * share
        prev_bound, prev_count = bound, count
    return prev_bound


@dataclass(frozen=True)
class Window:
    """What happened between two scrapes."""

    seconds: float
    requests: float
    errors: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    in_progress: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(before: Scrape, after: Scrape) -> Window:
    delta = {b: after.buckets.get(b, 0.0) - before.buckets.get(b, 0.0) for b in after.buckets}
    return Window(
        seconds=after.at - before.at,
        requests=after.total - before.total,
        errors=after.errors - before.errors,
        p50_ms=quantile(delta, 0.50) * 1000,
        p95_ms=quantile(delta, 0.95) * 1000,
        p99_ms=quantile(delta, 0.99) * 1000,
        in_progress=after.in_progress,
    )
