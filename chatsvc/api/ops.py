"""Health checks for load balancers and orchestrators."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Literal

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatsvc import __version__
from chatsvc.api.openapi import PublicOperation
from chatsvc.api.services import Services
from chatsvc.database import ping
from chatsvc.wire import Health, Readiness

log = logging.getLogger("chatsvc.health")


@get(
    "/health",
    exclude_from_auth=True,
    tags=["operations"],
    operation_id="getHealth",
    summary="Liveness check",
    response_description="The process answers.",
    operation_class=PublicOperation,
)
async def health() -> Health:
    """Liveness: the process answers."""
    return Health(version=__version__)


@get(
    "/health/ready",
    exclude_from_auth=True,
    tags=["operations"],
    operation_id="getReadiness",
    summary="Readiness check",
    response_description="The database and the event bus answer.",
    operation_class=PublicOperation,
    responses={
        503: ResponseSpec(
            data_container=Readiness,
            description="The database or the event bus is unreachable.",
            generate_examples=False,
        )
    },
)
async def ready(services: NamedDependency[Services]) -> Response[Readiness]:
    """Readiness: a real round trip to the database and to the event bus (`503` while
    either is unreachable), and the state of the upstream circuit breaker."""
    database = await _check("database", ping(services.engine))
    bus = await _check("event bus", services.bus.ping()) if services.bus.shared else "none"
    status = "unavailable" if "unavailable" in (database, bus) else "ok"
    body = Readiness(
        status=status, database=database, event_bus=bus, llm=services.provider.circuit_state
    )
    return Response(body, status_code=503 if status == "unavailable" else 200)


async def _check(name: str, round_trip: Awaitable[None]) -> Literal["ok", "unavailable"]:
    try:
        await round_trip
    except Exception as exc:  # any failure means "not ready"; the log says which
        log.warning("readiness check failed: %s: %s", name, type(exc).__name__)
        return "unavailable"
    return "ok"


@get("/metrics", exclude_from_auth=True, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics(services: NamedDependency[Services]) -> bytes:
    """Prometheus text: Litestar's HTTP metrics, then chatsvc's own."""
    services.telemetry.set_circuit(services.provider.circuit_state)
    return generate_latest(REGISTRY) + services.telemetry.render()
