"""What the service tells operators: one audit log line per generation event, and metrics.

Metrics live in a registry of their own per app (so that several apps can be
built in one process); ``/metrics`` serves it after Litestar's HTTP metrics.
The audit lines go to the ``chatsvc.audit`` logger with their fields as
``extra``: key=value text in development, JSON lines in production.
"""

from __future__ import annotations

import logging
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from chatsvc.wire import ErrorCode, MessageStatus

audit = logging.getLogger("chatsvc.audit")

AbortedBy = Literal["socket", "rest", "delete"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_CIRCUIT = {"closed": 0, "half-open": 1, "open": 2}
#: Distinct values of the ``model`` label of ``chatsvc_tokens`` (then ``other``).
MAX_MODEL_LABELS = 32


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("chatsvc_generations_started", "Generations started.", registry=r)
        self.finished = Counter(
            "chatsvc_generations_finished", "Generations ended, by final status.", ["status"],
            registry=r,
        )  # fmt: skip
        self.active = Gauge("chatsvc_generations_active", "Generations running now.", registry=r)
        self.events = Counter(
            "chatsvc_token_events", "Token and reasoning events relayed.", registry=r
        )
        self.completion_tokens = Counter(
            "chatsvc_completion_tokens",
            "Tokens the upstream reported generating (its usage figures).",
            registry=r,
        )
        self.tokens = Counter(
            "chatsvc_tokens",
            "Tokens of ended replies as stored: by model, final status, kind (prompt or "
            "completion) and whether they are estimates.",
            ["model", "status", "kind", "estimated"],
            registry=r,
        )
        #: The model label's values so far: at most MAX_MODEL_LABELS, then `other`.
        self._models: set[str] = set()
        self.first_token = Histogram(
            "chatsvc_time_to_first_token_seconds",
            "From the request to the first token relayed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.abort_latency = Histogram(
            "chatsvc_abort_latency_seconds",
            "From an abort request to the partial reply stored.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "chatsvc_upstream_errors", "Generations that failed, by error code.", ["code"],
            registry=r,
        )  # fmt: skip
        self.circuit = Gauge(
            "chatsvc_llm_circuit_state", "Upstream circuit: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )  # fmt: skip
        self.sockets = Gauge("chatsvc_websockets_open", "Open WebSockets.", registry=r)
        self.slow_consumers = Counter(
            "chatsvc_slow_consumers", "Sockets closed because they read too slowly.", registry=r
        )

    def _model_label(self, model: str) -> str:
        """The model as a label value: the models chats may choose are few (``MODELS``),
        but a label must stay bounded whatever is stored, so past the first ones: ``other``."""
        if model in self._models or len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_circuit(self, state: str) -> None:
        self.circuit.set(_CIRCUIT.get(state, 0))

    # --- generation events ----------------------------------------------------------------

    def generation_started(self, *, user_id: int, chat_id: object, task_id: object) -> None:
        self.started.inc()
        self.active.inc()
        audit.info(
            "generation started",
            extra={"event": "started", "user_id": user_id, "chat_id": str(chat_id),
                   "task_id": str(task_id)},
        )  # fmt: skip

    def first_token_after(self, seconds: float) -> None:
        self.first_token.observe(seconds)

    def generation_ended(
        self,
        *,
        status: MessageStatus,
        user_id: int,
        chat_id: object,
        task_id: object,
        duration: float,
        events: int,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        finish_reason: str | None,
        error_code: ErrorCode | None,
        aborted_by: AbortedBy | None,
        abort_latency: float | None,
        model: str,
        usage_estimated: bool,
    ) -> None:
        self.active.dec()
        self.finished.labels(status=status).inc()
        self.events.inc(events)
        if completion_tokens and not usage_estimated:
            self.completion_tokens.inc(completion_tokens)
        labels = {
            "model": self._model_label(model),
            "status": status,
            "estimated": "true" if usage_estimated else "false",
        }
        for kind, count in (("prompt", prompt_tokens), ("completion", completion_tokens)):
            self.tokens.labels(kind=kind, **labels).inc(count or 0)
        if error_code is not None:
            self.upstream_errors.labels(code=error_code).inc()
        if abort_latency is not None:
            self.abort_latency.observe(abort_latency)
        fields = {
            "event": status,
            "user_id": user_id,
            "chat_id": str(chat_id),
            "task_id": str(task_id),
            "duration_ms": round(duration * 1000),
            "events": events,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "usage_estimated": usage_estimated,
            "finish_reason": finish_reason,
        }
        if error_code is not None:
            fields["error_code"] = error_code
        if aborted_by is not None:
            fields["aborted_by"] = aborted_by
        level = logging.WARNING if status == "failed" else logging.INFO
        audit.log(level, "generation %s", status, extra=fields)
