"""The store of a sandboxed flow run (``stratoflow.sandbox``): every operation goes to the runtime's gateway.

``ApiStore`` already speaks the API; in a sandboxed child (``STRATOFLOW_RUNTIME_TOKEN`` set) its
blobs and result signatures go to the gateway too, so the child needs neither S3 credentials nor
the result key.
"""

from __future__ import annotations

import json
from typing import Any

from stratoflow._http import ApiError, quote_segment
from stratoflow.exceptions import ObjectNotFound
from stratoflow.storage.api_store import ApiStore
from stratoflow.storage.results import ResultIntegrityError


class GatewaySigner:
    """Signs and verifies result digests by asking the runtime, which holds the key."""

    def __init__(self, store: ApiStore) -> None:
        self.store = store

    def sign(self, serializer: str, digest: str) -> dict[str, str]:
        answer = self.store.http.request("POST", "/_runtime/sign", json_body={"serializer": serializer,
                                                                               "sha256": digest})
        return {"sig": str(answer["sig"]), "kid": str(answer["kid"])}

    def verify(self, serializer: str, digest: str, sig: Any, kid: Any, where: str) -> None:

        try:
            self.store.http.request("POST", "/_runtime/verify", json_body={
                "serializer": serializer, "sha256": digest, "sig": sig, "kid": kid, "where": where})
        except ApiError as exc:
            if exc.status == 422:
                raise ResultIntegrityError(exc.message) from None
            raise


class SandboxStore(ApiStore):
    def result_signer(self) -> GatewaySigner:
        return GatewaySigner(self)

    def put_blob(self, key: str, data: bytes) -> str:

        path = "/_runtime/blobs/" + "/".join(quote_segment(p) for p in key.split("/"))
        answer = self.http.request_bytes("PUT", path, data=data)
        return str(json.loads(answer)["uri"])

    def get_blob(self, uri: str) -> bytes:
        return self.http.request_bytes("GET", "/_runtime/blobs", query={"uri": uri})

    def has_blob(self, uri: str) -> bool:

        try:
            self.get_blob(uri)
        except ObjectNotFound:
            return False
        return True
