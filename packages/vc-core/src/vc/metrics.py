"""Prometheus metrics of one vc process (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CALL_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2)
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_calls = Gauge(
            "vc_active_calls", "Calls in progress", ["transport"], registry=self.registry
        )
        self.calls = Counter(
            "vc_calls", "Calls ended, by outcome", ["transport", "outcome"], registry=self.registry
        )
        self.stage_latency = Histogram(
            "vc_stage_latency_seconds",
            "Per-turn latency of each stage (see vc.monitor)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.barge_ins = Counter("vc_barge_ins", "Caller interruptions of bot speech",
                                 ["transport"], registry=self.registry)
        self.observer_errors = Counter("vc_observer_errors", "Exceptions raised by observers",
                                       ["observer"], registry=self.registry)
        self.provider_restarts = Counter(
            "vc_provider_restarts",
            "Provider worker processes that died and were restarted, by provider and cause",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "vc_tool_calls",
            "Tool calls of the LLM, by tool and outcome (ok, refused, invalid, error)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.provider_failures = Counter(
            "vc_provider_failures",
            "Provider failures during a call's turn (crash, stall or refusal), by kind and provider",
            ["kind", "provider"],
            registry=self.registry,
        )
        self.apologies = Counter(
            "vc_apologies",
            "Apologies the caller heard for a failed turn, by the kind of provider that failed",
            ["kind"],
            registry=self.registry,
        )
        self.refused = Counter(
            "vc_calls_refused",
            "Calls refused before they were answered, by reason (not_accepting, capacity, "
            "tts_not_ready)",
            ["reason"],
            registry=self.registry,
        )
        self.call_duration = Histogram(
            "vc_call_duration_seconds", "Length of the calls that ended, by transport",
            ["transport"], buckets=CALL_BUCKETS, registry=self.registry,
        )
        # The caller's audio on the network, per call (transports that measure it: RTP).
        self.rtp_packets = Counter(
            "vc_rtp_packets", "Caller RTP packets of ended calls, by outcome (received, lost, "
            "late, duplicate)", ["transport", "outcome"], registry=self.registry,
        )
        self.rtp_concealed = Counter(
            "vc_rtp_concealed_seconds", "Caller audio filled in for lost and late packets",
            ["transport"], registry=self.registry,
        )
        self.rtp_jitter = Histogram(
            "vc_rtp_jitter_seconds", "Highest RFC 3550 interarrival jitter of each call",
            ["transport"], buckets=JITTER_BUCKETS, registry=self.registry,
        )
        self.rtp_loss = Histogram(
            "vc_rtp_loss_ratio", "Share of each call's caller packets that never arrived",
            ["transport"], buckets=LOSS_BUCKETS, registry=self.registry,
        )
        self.ready = Gauge("vc_ready", "1 when the process takes calls", registry=self.registry)
