"""
A real S3-compatible bucket behind the development Panel (backups.md §6, panel.md §5.2): what the
Panel's ``S3Filesystem`` adapter does with its credentials, done with botocore.

* ``GET /backups/{uuid}?size=`` → `ObjectStore.start_upload` (CreateMultipartUpload of
  ``<server>/<backup>.tar.gz``, content type ``application/x-gzip``) and one presigned
  ``UploadPart`` URL per part (`ObjectStore.part_urls`, SigV4 query signatures valid for
  ``presign_lifespan`` seconds);
* ``POST /backups/{uuid}`` → `ObjectStore.complete` with the reported parts, or `abort` on a
  failure report;
* restores and downloads → `ObjectStore.download_url` (a presigned GET, 5 minutes by default);
* deletions → `ObjectStore.delete`.

The daemon never sees the credentials: it only gets presigned URLs.  URLs are signed for
``public_endpoint`` when it is set (a proxy in front of the store, as tests use: the signature
covers the ``Host`` the proxy forwards), else for ``endpoint``.

Configured by ``backup_storage.s3`` of the fixture file::

    backup_storage:
      disk: s3
      part_size: 5242880
      s3:
        endpoint: http://127.0.0.1:18333
        bucket: backups
        region: us-east-1
        access_key: testaccess
        secret_key: testsecret
        presign_lifespan: 3600

Calls are blocking (botocore) and quick against a store on loopback; the development Panel makes
them on its reactor thread.  botocore is an optional dependency (``pip install .[dev]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["ObjectStore", "ObjectStoreSettings"]

CONTENT_TYPE = "application/x-gzip"


@dataclass(frozen=True)
class ObjectStoreSettings:
    """
    ``backup_storage.s3`` of the fixture file.
    """

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    public_endpoint: str | None = None
    presign_lifespan: int = 3600
    download_lifespan: int = 300

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectStoreSettings:
        """
        :raises ValueError: a required key is missing, or an unknown key is present.
        """
        values = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError("backup_storage.s3: unknown keys {}".format(", ".join(sorted(unknown))))
        for key in ("endpoint", "bucket", "access_key", "secret_key"):
            if not isinstance(values.get(key), str) or not values[key]:
                raise ValueError("backup_storage.s3.{}: a non-empty string is required".format(key))
        for key in ("presign_lifespan", "download_lifespan"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)


def _client(settings: ObjectStoreSettings, endpoint: str) -> Any:
    try:
        import botocore.session
        from botocore.config import Config
    except ImportError:  # pragma: no cover - the optional dependency is missing
        raise RuntimeError("backup_storage.s3 needs botocore: pip install '.[dev]'") from None
    session = botocore.session.get_session()
    return session.create_client(
        "s3", endpoint_url=endpoint, region_name=settings.region,
        aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}))


class ObjectStore:
    """
    One bucket, with a client for the Panel's own calls and one that signs the URLs handed to
    the daemon.
    """

    def __init__(self, settings: ObjectStoreSettings) -> None:
        self.settings = settings
        self._api = _client(settings, settings.endpoint)
        self._signer = _client(settings, settings.public_endpoint or settings.endpoint)

    @property
    def bucket(self) -> str:
        """
        The bucket's name.
        """
        return self.settings.bucket

    def ensure_bucket(self) -> None:
        """
        Create the bucket when it does not exist.
        """
        try:
            self._api.head_bucket(Bucket=self.bucket)
        except Exception:
            self._api.create_bucket(Bucket=self.bucket)

    def start_upload(self, key: str) -> str:
        """
        CreateMultipartUpload; the upload id.
        """
        answer = self._api.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                   ContentType=CONTENT_TYPE)
        return str(answer["UploadId"])

    def part_urls(self, key: str, upload_id: str, count: int) -> list[str]:
        """
        Presigned ``UploadPart`` URLs for parts 1..count.
        """
        return [self._signer.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                                   "PartNumber": number},
            ExpiresIn=self.settings.presign_lifespan) for number in range(1, count + 1)]

    def complete(self, key: str, upload_id: str, parts: Sequence[Mapping[str, Any]] | None) -> None:
        """
        CompleteMultipartUpload with the reported parts (all uploaded parts when ``None``, as
        the Panel lists them itself).
        """
        if parts is None:
            listed = self._api.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id)
            chosen = [{"ETag": p["ETag"], "PartNumber": p["PartNumber"]}
                      for p in listed.get("Parts", [])]
        else:
            chosen = [{"ETag": str(p["etag"]), "PartNumber": int(float(p["part_number"]))}
                      for p in parts]
        self._api.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": chosen})

    def abort(self, key: str, upload_id: str) -> None:
        """
        AbortMultipartUpload.
        """
        self._api.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def download_url(self, key: str, lifespan: int | None = None) -> str:
        """
        A presigned GET of the object (restores, downloads).
        """
        return str(self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=lifespan if lifespan is not None else self.settings.download_lifespan))

    def delete(self, key: str) -> None:
        """
        DeleteObject.
        """
        self._api.delete_object(Bucket=self.bucket, Key=key)

    def read(self, key: str) -> bytes:
        """
        The object's bytes (tests).
        """
        body = self._api.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def keys(self) -> list[str]:
        """
        Every key of the bucket (tests).
        """
        answer = self._api.list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in answer.get("Contents", [])]

    def uploads(self) -> list[str]:
        """
        The upload ids of unfinished multipart uploads (tests).
        """
        answer = self._api.list_multipart_uploads(Bucket=self.bucket)
        return [item["UploadId"] for item in answer.get("Uploads", [])]
