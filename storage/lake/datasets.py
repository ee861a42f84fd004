"""The Parquet lake: Hive-partitioned datasets on any pyarrow filesystem, files published by rename, manifests.

Layout under the lake root (a folder, ``s3://bucket/prefix`` or another URI pyarrow understands; the filesystems come
from ``storage.lake.filesystems``)::

    <dataset>/<key>=<value>/…/s<snapshot>-<n>.parquet     published files (what readers see)
    _staging/<snapshot>/<dataset>/<key>=<value>/…          files being written (no reader looks under ``_``)
    _manifests/m<snapshot>.json                            every published file after snapshot <snapshot>

Files are written under ``_staging`` and only then renamed into their dataset, so a reader never sees a partial
file (on S3 a rename is copy-then-delete of whole objects: still never partial). Partition values are URI-encoded
in directory names (pyarrow's Hive default), so a tenant id such as ``../x`` stays one directory level.

On a local lake every folder the lake creates or writes into is 0700, from the root down, and every file is 0600
from its creation on (``storage.private``): the lake holds every tenant's full payloads.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import StorageError
from storage.lake.filesystems import LakeLocationError, lake_location
from storage.lake.parquet import ROW_GROUP_ROWS, PartitionedWriter, parquet_options, sort_keys, sort_table
from storage.private import private_dir, private_file

STAGING = "_staging"
WRITE_OPTIONS = {"max_open_files": 1024, "max_partitions": 100_000, "max_rows_per_group": 256 * 1024}
"""``pyarrow.dataset.write_dataset`` options of the export benchmark's ceiling (partitions of a whole export)."""
MANIFESTS = "_manifests"


class LakeError(StorageError):
    """The lake cannot be opened, read or written."""


@dataclass(frozen=True, kw_only=True)
class LakeFile:
    """One published Parquet file of a dataset."""

    dataset: str
    """Dataset name (``commands``, ``tenant_commands``, ``events``, ``frontend_actions``)."""
    path: str
    """Path relative to the dataset folder, e.g. ``retention=long_lived/day=2026-11-20/s0000000003-0.parquet``."""
    rows: int
    """Number of rows in the file."""
    bytes: int | None = None
    """Arrow (≈ Parquet uncompressed) bytes of its rows, what compaction sizes files by; None in older manifests."""

    @property
    def partition(self) -> dict[str, str]:
        """The decoded Hive keys of the file's folder."""
        return partition_of(self.path)

    def to_json(self) -> dict:
        """JSON form for the ledger and manifests."""
        out = {"dataset": self.dataset, "path": self.path, "rows": self.rows}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        return out

    @classmethod
    def from_json(cls, d: dict) -> LakeFile:
        """Inverse of ``to_json``."""
        return cls(dataset=d["dataset"], path=d["path"], rows=int(d["rows"]),
                   bytes=int(d["bytes"]) if d.get("bytes") is not None else None)


def partition_of(path: str) -> dict[str, str]:
    """The decoded ``key=value`` folders of a relative path."""
    parts = {}
    for seg in path.split("/")[:-1]:
        key, sep, value = seg.partition("=")
        if sep:
            parts[key] = unquote(value)
    return parts


class Lake:
    """A lake root on a pyarrow filesystem."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            self.location = lake_location(uri)
        except LakeLocationError as e:
            raise LakeError(str(e)) from e
        self.fs, self.root = self.location.arrow, self.location.root

    @property
    def is_local(self) -> bool:
        """True when the lake is a local folder."""
        return self.location.is_local

    def abspath(self, *parts: str) -> str:
        """A path under the root, as the filesystem names it."""
        return posixpath.join(self.root, *parts)

    def staging_dir(self, snapshot_id: int) -> str:
        """Relative folder where a snapshot's files are written before publishing."""
        return f"{STAGING}/{snapshot_id:010d}"

    def write_dataset(self, source: pa.RecordBatchReader, *, dataset: str, partition_by: list[str],
                      snapshot_id: int, prefix: str = "s", tag: str = "",
                      budget_bytes: int = 128 * 1024 * 1024, max_open: int = 64) -> list[LakeFile]:
        """Stream ``source`` into staging, Hive-partitioned by ``partition_by``; the files written, unpublished.

        Files are named ``<prefix><snapshot>-<tag><n>.parquet``: an export unit's attempt passes its own ``tag``
        (``u3a2-``), so writers of one snapshot never share a file name. Memory stays within the writer's fixed
        budget (``budget_bytes`` of pending rows, ``max_open`` files: ``storage.lake.parquet``), whatever the row
        count.
        """
        base = self.abspath(self.staging_dir(snapshot_id), dataset)
        writer = PartitionedWriter(self.fs, base, schema=source.schema, partition_by=partition_by,
                                   name=lambda n: f"{prefix}{snapshot_id:010d}-{tag}{n}.parquet",
                                   sort_by=tuple(sort_keys(dataset, source.schema)),
                                   budget_bytes=budget_bytes, max_open=max_open,
                                   mkdir=self.make_dir, created=self.seal)
        try:
            for batch in source:
                writer.write(batch)
            written = writer.close()
        except (pa.ArrowException, OSError) as e:
            raise LakeError(f"cannot write dataset {dataset!r} to {self.uri}: {e}") from e
        return [LakeFile(dataset=dataset, path=rel, rows=rows, bytes=size) for rel, rows, size in written]

    def publish(self, files: Iterable[LakeFile], *, snapshot_id: int) -> int:
        """Rename staged files into their datasets; already-published ones are skipped (safe to repeat)."""
        moved: list[str] = []
        staged = self._staged_keys(snapshot_id) if self._on_s3 else None  # one listing instead of a HEAD per file
        for f in files:
            src = self.abspath(self.staging_dir(snapshot_id), f.dataset, f.path)
            dst = self.abspath(f.dataset, f.path)
            if src in staged if staged is not None else self._exists(src):
                self.make_dir(posixpath.dirname(dst))
                if self._on_s3:  # one CopyObject now; the sources go in one batch below (a rerun copies again)
                    self.fs.copy_file(src, dst)
                else:
                    self.fs.move(src, dst)
                moved.append(src)
            elif not self._exists(dst):
                raise LakeError(f"file {f.dataset}/{f.path} of snapshot {snapshot_id} is neither staged nor published")
        if self._on_s3:
            self._remove(moved)
        return len(moved)

    def staged_snapshots(self) -> list[int]:
        """The snapshot ids that have a folder (S3: a prefix) under ``_staging``, in order."""
        info = self.fs.get_file_info(pafs.FileSelector(self.abspath(STAGING), allow_not_found=True))
        return sorted(int(i.base_name) for i in info
                      if i.type == pafs.FileType.Directory and re.fullmatch(r"[0-9]{10}", i.base_name))

    def discard_staging(self, snapshot_id: int) -> None:
        """Remove a snapshot's staging folder (leftovers of a crashed run)."""
        path = self.abspath(self.staging_dir(snapshot_id))
        if self._on_s3:
            self._remove(sorted(self._staged_keys(snapshot_id)))
        elif self._exists(path):
            self.fs.delete_dir(path)

    def delete(self, files: Iterable[LakeFile]) -> int:
        """Delete published files; a file already gone counts as deleted (reruns are safe)."""
        if self._on_s3:
            paths = [self.abspath(f.dataset, f.path) for f in files]
            self._remove(paths)
            return len(paths)
        n = 0
        for f in files:
            path = self.abspath(f.dataset, f.path)
            if self._exists(path):
                self.fs.delete_file(path)
                n += 1
        return n

    def prune_empty_dirs(self, partitions: Iterable[tuple[str, str]]) -> None:
        """Remove partition folders (and their empty parents inside the dataset) left without files.

        On S3 nothing to do: a folder is a key prefix, gone with its last object."""
        if self._on_s3:
            return
        for dataset, pdir in sorted(partitions, key=lambda p: -len(p[1])):
            parts = pdir.split("/")
            while parts and parts != [""]:
                path = self.abspath(dataset, *parts)
                info = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                if info or not self._exists(path):
                    break
                self.fs.delete_dir(path)
                parts = parts[:-1]

    def write_manifest(self, snapshot_id: int, files: list[LakeFile]) -> None:
        """Publish the manifest of every live file after ``snapshot_id`` (temporary name, then rename)."""
        body = json.dumps({"snapshot_id": snapshot_id, "files": [f.to_json() for f in files]}).encode()
        self.make_dir(self.abspath(MANIFESTS))
        final = self.abspath(MANIFESTS, f"m{snapshot_id:010d}.json")
        tmp = final if self.location.scheme == "s3" else final + ".tmp"  # an S3 PUT is never seen half-written
        with self.fs.open_output_stream(tmp) as out:
            self.seal(tmp)
            out.write(body)
        if tmp != final:
            self.fs.move(tmp, final)
        # keep a few for readers that listed just before
        self._remove([self.abspath(MANIFESTS, old) for old in self._manifest_names()[:-5]])

    def manifest(self) -> tuple[int, list[LakeFile]] | None:
        """The newest manifest as ``(snapshot_id, files)``, or None when nothing was ever exported here."""
        names = self._manifest_names()
        if not names:
            return None
        with self.fs.open_input_stream(self.abspath(MANIFESTS, names[-1])) as f:
            doc = json.loads(f.read())
        return doc["snapshot_id"], [LakeFile.from_json(d) for d in doc["files"]]

    def merge(self, files: list[LakeFile], *, snapshot_id: int, dataset: str, partition_dir: str,
              part: int = 0) -> LakeFile:
        """Merge published files of one partition into one staged file ``c<snapshot>-<part>.parquet``, its rows
        sorted by the dataset's sort keys. The files are read whole (the caller bounds their total size)."""
        schema = pq.read_schema(self.abspath(dataset, files[0].path), filesystem=self.fs)
        tables = []
        for f in files:
            with self.fs.open_input_file(self.abspath(dataset, f.path)) as src:
                t = pq.ParquetFile(src).read()
            tables.append(t.cast(schema) if t.schema != schema else t)
        return self.stage_table(pa.concat_tables(tables), snapshot_id=snapshot_id, dataset=dataset,
                                path=posixpath.join(partition_dir, f"c{snapshot_id:010d}-{part}.parquet"))

    def stage_table(self, table: pa.Table, *, snapshot_id: int, dataset: str, path: str) -> LakeFile:
        """Write ``table`` as one staged file of ``dataset`` at ``path`` (relative to the dataset), unpublished;
        its rows sorted by the dataset's sort keys, written with the lake's Parquet options."""
        out_path = self.abspath(self.staging_dir(snapshot_id), dataset, path)
        self.make_dir(posixpath.dirname(out_path))
        keys = sort_keys(dataset, table.schema)
        table = sort_table(table, keys)
        with pq.ParquetWriter(out_path, table.schema, filesystem=self.fs, **parquet_options(table.schema, keys)) as w:
            self.seal(out_path)
            w.write_table(table, row_group_size=ROW_GROUP_ROWS)
        return LakeFile(dataset=dataset, path=path, rows=table.num_rows, bytes=table.nbytes)

    def file_bytes(self, f: LakeFile) -> int:
        """``f.bytes``, or (files of older manifests) the uncompressed size its footer records."""
        if f.bytes is not None:
            return f.bytes
        meta = pq.read_metadata(self.abspath(f.dataset, f.path), filesystem=self.fs)
        return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))

    def make_dir(self, path: str) -> None:
        """Create a folder of the lake and its parents; on a local lake 0700, like every folder up to the root.

        On object storage nothing: folders are key prefixes, and marker objects would only cost requests."""
        if self.is_local:
            private_dir(path, base=self.root)
        elif self.location.scheme != "s3":
            self.fs.create_dir(path, recursive=True)

    def seal(self, path: str) -> None:
        """Make a file the lake just created private (0600) on a local lake; call it before writing the content."""
        if self.is_local:
            private_file(path)

    @property
    def _on_s3(self) -> bool:
        return self.location.scheme == "s3"

    def _staged_keys(self, snapshot_id: int) -> set[str]:
        """Every object under a snapshot's staging prefix (S3: listed 1,000 keys per request)."""
        selector = pafs.FileSelector(self.abspath(self.staging_dir(snapshot_id)), recursive=True,
                                     allow_not_found=True)
        return {i.path for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File}

    def _remove(self, paths: list[str]) -> None:
        """Delete files; on S3 in batched DeleteObjects requests through s3fs (pyarrow's per-object delete also
        writes a directory-marker object for the parent it leaves empty)."""
        if not paths:
            return
        if self._on_s3:
            self.location.fsspec().rm(paths)
        else:
            for path in paths:
                self.fs.delete_file(path)

    def _manifest_names(self) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(self.abspath(MANIFESTS), allow_not_found=True))
        return sorted(i.base_name for i in info if i.base_name.endswith(".json") and i.type == pafs.FileType.File)

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound
