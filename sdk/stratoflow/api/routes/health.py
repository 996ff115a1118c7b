"""``GET /health``: liveness, without touching the store (a deploy's smoke test calls it)."""

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow import __version__
from stratoflow.schemas import Health

TAG = "meta"
router = APIGatewayHttpRouter()


@router.get("/health", tags=[TAG], summary="Liveness check (does not touch the store)")
def health() -> Health:
    return Health(version=__version__)
