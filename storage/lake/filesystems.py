"""Where the lake lives: the one place that turns a lake URI into the filesystems that write and read it.

``lake_location(uri)`` gives a ``LakeLocation``: the pyarrow filesystem (the export, compaction, retention's rewrite
and the integrity check write and read through it), the root path on it, and — for object storage — the fsspec
filesystem a DuckDB connection registers so that DuckDB reads the lake with its own Parquet reader (projection and
filter pushdown, row-group pruning, its metadata and file caches, and the ``allowed_paths`` lock-down):

- a folder (``/var/lake`` or ``file:///var/lake``): pyarrow's local filesystem; DuckDB opens the paths;
- ``s3://bucket/prefix``: ``pyarrow.fs.S3FileSystem`` and ``s3fs.S3FileSystem`` on the same endpoint and region.
  DuckDB's ``httpfs`` extension is not used: it is downloaded from DuckDB's site at run time (no PyPI wheel fits
  DuckDB 2.0), so connections register s3fs (``con.register_filesystem``) instead;
- any other URI pyarrow understands (``gs://``, ``hdfs://``…): pyarrow only; DuckDB then scans Arrow datasets.

Credentials and endpoint are never in code or in the URI: the standard AWS variables or files, read by both SDKs —
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` or ``AWS_PROFILE`` with ``~/.aws/credentials``;
the endpoint of an S3-compatible store from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; the region from
``AWS_REGION``/``AWS_DEFAULT_REGION`` (else, on AWS itself, the bucket's own region is looked up).

On object storage there are no folders: the lake writes no directory-marker objects (``create_dir`` is never called,
the ``create_dir=False`` of ``pyarrow.dataset.write_dataset``), and a "folder" is gone once its last object is.
"""

from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from storage.errors import StorageError


class LakeLocationError(StorageError):
    """The lake URI cannot be turned into a filesystem (bad form, unknown scheme, store not configured)."""


S3_SCHEMES = ("s3", "s3a")


@dataclass(frozen=True, kw_only=True)
class LakeLocation:
    """A lake root: the filesystems that reach it and its path on them."""

    uri: str
    """The lake URI as configured (``CMDLOG_LAKE_URI``); the export ledger keys its runs by it."""
    arrow: pafs.FileSystem
    """pyarrow filesystem for writing and pyarrow reads."""
    root: str
    """The root as ``arrow`` names it: an absolute folder, or ``bucket/prefix`` on S3."""
    scheme: str = ""
    """``""`` for a local folder, ``"s3"`` for S3, else the URI's scheme."""
    endpoint: str | None = None
    """The S3 endpoint (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``), None for AWS itself."""
    region: str | None = None
    """The S3 region the filesystems use."""
    _fsspec: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_local(self) -> bool:
        """True for a local folder (DuckDB opens its files itself)."""
        return self.scheme == ""

    @property
    def duckdb_native(self) -> bool:
        """True when DuckDB reads the files with its own reader: a local folder, or S3 through ``fsspec()``."""
        return self.scheme in ("", "s3")

    def duckdb_path(self, path: str) -> str:
        """The name DuckDB opens for ``path`` (a path on ``arrow``): the path itself, or ``s3://bucket/key``."""
        return path if self.is_local else f"{self.scheme}://{path}"

    def fsspec(self) -> Any:
        """The fsspec filesystem to register on a DuckDB connection (S3 only; one per location, reused)."""
        if self.scheme != "s3":
            raise LakeLocationError(f"the lake {self.uri!r} is not on S3: DuckDB reads it without fsspec")
        if "s3" not in self._fsspec:
            client: dict[str, Any] = {"region_name": self.region} if self.region else {}
            # default_cache_type "none": each read DuckDB asks for is one ranged GET of exactly those bytes (DuckDB
            # caches them itself); fsspec's read-ahead would fetch 50 MB blocks and defeat row-group pruning.
            # skip_instance_cache: fsspec shares one instance per argument set process-wide, with its listing cache.
            self._fsspec["s3"] = _immutable_files_s3()(endpoint_url=self.endpoint, client_kwargs=client,
                                                   default_cache_type="none", default_fill_cache=False,
                                                   use_listings_cache=False, skip_instance_cache=True)
        return self._fsspec["s3"]


@functools.cache
def _immutable_files_s3() -> type:
    """An s3fs filesystem class that remembers what it learnt of each Parquet file (size, etag, date).

    Published lake files are never rewritten (every file name carries the snapshot that wrote it; compaction and
    retention write new names), and DuckDB asks for a file's details several times per query (measured: 5 HEAD
    requests per file per query on a warm connection without this); one HEAD per file and connection is enough.
    """
    import s3fs  # noqa: PLC0415 — only S3 lakes need it (start-up cost of aiobotocore)

    class ImmutableFilesS3(s3fs.S3FileSystem):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._file_info: dict[str, dict] = {}

        async def _info(self, path: str, *args: Any, **kwargs: Any) -> dict:
            key = self._strip_protocol(path)
            if key in self._file_info:
                return dict(self._file_info[key])
            info = await super()._info(path, *args, **kwargs)
            if key.endswith(".parquet") and info.get("type") == "file":
                self._file_info[key] = dict(info)
            return info

    return ImmutableFilesS3


def _env(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _s3(uri: str) -> LakeLocation:
    parts = urlsplit(uri)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket or parts.query or parts.fragment or "@" in bucket or ":" in bucket:
        raise LakeLocationError(f"lake URI {uri!r}: expected s3://bucket/prefix (no credentials, port or options in "
                                "the URI: the endpoint and keys come from the AWS_* variables or ~/.aws files)")
    if any(seg in (".", "..") for seg in prefix.split("/")) or "//" in parts.path.strip("/"):
        raise LakeLocationError(f"lake URI {uri!r}: the prefix must be a plain path (no '.', '..' or empty segments)")
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region is None and endpoint is None:
        try:
            region = pafs.resolve_s3_region(bucket)
        except (OSError, pa.ArrowException) as e:
            raise LakeLocationError(f"lake URI {uri!r}: cannot find the region of bucket {bucket!r} ({e}); "
                                    "set AWS_REGION") from e
    options: dict[str, Any] = {"region": region} if region else {}
    if endpoint:
        scheme = urlsplit(endpoint).scheme
        options.update(endpoint_override=endpoint, scheme=scheme or "https")
    try:
        # allow_delayed_open: a small file is one PutObject, not a multipart upload's three requests
        fs = pafs.S3FileSystem(**options, allow_bucket_creation=False, allow_bucket_deletion=False,
                               allow_delayed_open=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise LakeLocationError(f"lake URI {uri!r}: cannot open S3: {e}") from e
    return LakeLocation(uri=uri, arrow=fs, root=posixpath.join(bucket, prefix) if prefix else bucket, scheme="s3",
                        endpoint=endpoint, region=region)


@functools.lru_cache(maxsize=32)
def _s3_cached(uri: str, env: tuple) -> LakeLocation:
    return _s3(uri)


_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
             "AWS_ACCESS_KEY_ID", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def lake_location(uri: str) -> LakeLocation:
    """The location of the lake ``uri``: on S3 the same object for the same URI and AWS settings (clients reused)."""
    if not isinstance(uri, str) or not uri.strip():
        raise LakeLocationError("lake URI: empty (set CMDLOG_LAKE_URI to a folder or s3://bucket/prefix)")
    scheme = urlsplit(uri).scheme.lower()
    if scheme in S3_SCHEMES:
        return _s3_cached("s3" + uri[len(scheme):], tuple(os.environ.get(k) for k in _ENV_KEYS))
    try:  # a folder (absolute path or file:// URI) or another filesystem pyarrow knows, exactly as before S3 support
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise LakeLocationError(f"cannot open the lake {uri!r}: {e}") from e
    local = isinstance(fs, pafs.LocalFileSystem)
    return LakeLocation(uri=uri, arrow=fs, root=root.rstrip("/") or "/", scheme="" if local else scheme)
