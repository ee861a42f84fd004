"""``storage.lake.filesystems``: a lake URI becomes its filesystems, with endpoint and region from the AWS variables
only (no S3 request is made here: building the filesystems does not connect)."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from storage.lake.filesystems import LakeLocationError, lake_location


def test_a_folder_is_local_and_duckdb_opens_its_paths(tmp_path):
    loc = lake_location(str(tmp_path / "lake"))
    assert loc.is_local and loc.duckdb_native and isinstance(loc.arrow, pafs.LocalFileSystem)
    assert loc.root == str(tmp_path / "lake")
    assert loc.duckdb_path(f"{loc.root}/commands/x.parquet") == f"{tmp_path}/lake/commands/x.parquet"
    with pytest.raises(LakeLocationError, match="not on S3"):
        loc.fsspec()


def test_s3_takes_endpoint_and_region_from_the_aws_variables(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")  # the S3-specific one wins
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-example")
    loc = lake_location("s3://bucket/some/prefix/")
    assert (loc.scheme, loc.root, loc.endpoint, loc.region) == ("s3", "bucket/some/prefix", "http://127.0.0.1:2",
                                                              "eu-west-3")
    assert isinstance(loc.arrow, pafs.S3FileSystem) and loc.arrow.region == "eu-west-3"
    assert not loc.is_local and loc.duckdb_native
    assert loc.duckdb_path("bucket/some/prefix/commands/a.parquet") == "s3://bucket/some/prefix/commands/a.parquet"
    fs = loc.fsspec()
    assert fs is loc.fsspec() and "s3" in fs.protocol
    assert fs.client_kwargs == {"region_name": "eu-west-3"} and fs.endpoint_url == "http://127.0.0.1:2"
    assert "s3cr3t-example" not in repr(loc) and "AKIDEXAMPLEKEY" not in repr(loc)  # no credentials kept
    monkeypatch.setenv("AWS_REGION", "us-east-2")  # other settings: another location, not a stale cached one
    assert lake_location("s3://bucket/some/prefix/").region == "us-east-2"


@pytest.mark.parametrize("uri", ["", "s3://", "s3://user:pw@bucket/p", "s3://bucket:9000/p", "s3://bucket/p?x=1",
                                 "s3://bucket/p#f", "s3://bucket/../p", "s3://bucket/a/./b", "s3://bucket/a//b"])
def test_malformed_lake_uris_are_refused_with_the_uri_named(uri, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(LakeLocationError, match="lake URI"):
        lake_location(uri)
