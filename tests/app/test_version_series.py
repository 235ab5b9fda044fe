"""The latency histograms carry the serving version, and the label stays bounded over months of sleeps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from app.metrics import VersionSeries


def _versions(h: Histogram) -> set[str]:
    return {s.labels["version"] for m in h.collect() for s in m.samples if "version" in s.labels}


def test_only_the_most_recent_versions_keep_their_series() -> None:
    reg = CollectorRegistry()
    latency = Histogram("lat", "x", ["endpoint", "version"], registry=reg)
    ttft = Histogram("ttft", "x", ["endpoint", "version"], registry=reg)
    series = VersionSeries((latency, ttft), keep=3)
    for i in range(6):
        series.observe(latency, "chat", f"v{i}", 0.1)
        series.observe(ttft, "completion", f"v{i}", 0.1)
        series.observe(latency, "chat", "base", 0.2)  # still served: never the oldest
    assert _versions(latency) == {"base", "v4", "v5"} and _versions(ttft) == {"v4", "v5"}
    assert reg.get_sample_value("lat_count", {"endpoint": "chat", "version": "base"}) == 6
