"""Deployments: package a flow's source to S3 (content-addressed) and record where it runs.

``deploy()`` for one flow, ``deploy_project()`` for a ``stratoflow.yaml``; ``materialize_package``
and ``load_entrypoint`` are the executor's side.
"""

from stratoflow.deployments.deploy import DeploymentError, deploy
from stratoflow.deployments.packaging import (
    EntrypointError,
    Package,
    PackageIntegrityError,
    PackagingError,
    build_package,
    load_entrypoint,
    materialize_package,
    upload_package,
)
from stratoflow.deployments.project import deploy_project, load_project

__all__ = [
    "DeploymentError",
    "EntrypointError",
    "Package",
    "PackageIntegrityError",
    "PackagingError",
    "build_package",
    "deploy",
    "deploy_project",
    "load_entrypoint",
    "load_project",
    "materialize_package",
    "upload_package",
]
