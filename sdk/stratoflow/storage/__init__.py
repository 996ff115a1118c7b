"""Storage: the narrow ``Store`` interface and its one implementation on DynamoDB + S3."""

from stratoflow.storage.base import LogPage, Store

__all__ = ["LogPage", "Store", "get_store"]


def get_store() -> Store:
    """The process's store for the current settings (embedded moto or real AWS)."""
    from stratoflow.storage.dynamodb import get_dynamodb_store

    return get_dynamodb_store()
