"""Results, large parameters and packages in S3, shared by every store (they never go through
the API). Only the stack's own bucket is read: a reference naming another bucket came from
somewhere else, and reading it would use this process's credentials on its behalf."""

from __future__ import annotations

from stratoflow.exceptions import StratoflowError
from stratoflow.settings import Settings
from stratoflow.storage import aws as _aws


class S3Blobs:
    """``put_blob``/``get_blob`` on the settings' bucket, with the SDK's own AWS credentials."""

    settings: Settings

    def put_blob(self, key: str, data: bytes) -> str:
        _aws.client("s3", self.settings).put_object(Bucket=self.settings.bucket, Key=key, Body=data)
        return f"s3://{self.settings.bucket}/{key}"

    def get_blob(self, uri: str) -> bytes:
        bucket, key = self._own(uri)
        body = _aws.client("s3", self.settings).get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())

    def has_blob(self, uri: str) -> bool:
        """Whether the object exists (a HEAD request: deploy skips uploading a package that is there)."""
        # cold start: botocore's signer loads only in a process that calls the API
        from botocore.exceptions import ClientError

        bucket, key = self._own(uri)
        try:
            _aws.client("s3", self.settings).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _own(self, uri: str) -> tuple[str, str]:
        bucket, key = _split(uri)
        if bucket != self.settings.bucket:
            raise StratoflowError(f"{uri!r} is not in this stack's bucket {self.settings.bucket!r}: not read")
        return bucket, key


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
