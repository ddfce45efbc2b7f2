"""LanceDB stores on S3 (a moto server on 127.0.0.1): where the options come from, and that
the credentials are never printed."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore.handle import open_handle

SECRET = "s3cr3t-" + uuid.uuid4().hex


def _people() -> pa.Table:
    return pa.table({"id": ["a", "b"], "age": [31, 42]})


def test_options_from_the_uri_and_explicit_ones_reach_the_same_tables(s3_server):
    prefix = uuid.uuid4().hex
    with vs.connect(s3_server.store_uri(prefix)) as a:
        a.create_table("p", _people().schema, key="id", data=_people())
    # explicit options, credentials included, instead of the query string and environment
    with vs.connect(s3_server.uri(prefix), storage_options=s3_server.storage_options) as b:
        assert sorted(b.to_arrow("p")["id"].to_pylist()) == ["a", "b"]
        # a worker reopens it from its handle
        assert open_handle(b.worker_handle()).count("p") == 2


def test_credentials_are_never_in_reprs_handles_or_errors(s3_server):
    opts = {**s3_server.storage_options, "aws_secret_access_key": SECRET}
    store = vs.connect(s3_server.uri(uuid.uuid4().hex), storage_options=opts)
    try:
        store.create_table("p", _people().schema, key="id", data=_people())
        printed = [repr(store), str(store.uri), repr(store.worker_handle()),
                   str(store.table_info("p"))]
    finally:
        store.close()
    # a bucket that does not exist: the error names the location, never the secret
    with pytest.raises(vs.StoreError) as err:
        vs.connect(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x", storage_options=opts)
    printed.append(str(err.value))
    assert all(SECRET not in text for text in printed), printed


def test_cli_never_prints_a_secret_given_in_the_location(s3_server, tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("customer_id,age\nc1,30\nc2,40\n")
    uri = f"{s3_server.store_uri(uuid.uuid4().hex)}&aws_secret_access_key={SECRET}"
    env_cmd = [sys.executable, "-c", "from services.cli import main; main()", "--store", uri]
    missing = (f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x?aws_endpoint="
               f"{s3_server.endpoint}&allow_http=true&aws_secret_access_key={SECRET}")
    outputs = []
    for store, args in ((uri, ["ingest", "customers", str(src), "--id-column", "customer_id"]),
                        (uri, ["--json", "stats"]), (uri, ["-v", "stats"]),
                        (missing, ["ingest", "customers", str(src), "--id-column",
                                   "customer_id"])):
        r = subprocess.run([*env_cmd[:-1], store, *args], capture_output=True, text=True,
                           timeout=120)
        outputs.append((r.returncode, r.stdout + r.stderr))
    assert all(SECRET not in text for _, text in outputs), outputs
    assert outputs[0][0] == 0, outputs[0]
    stats = json.loads(outputs[1][1])
    assert [t["rows"] for t in stats["tables"] if t["name"] == "customers"] == [2]
    # a bucket that does not exist: refused with one line, not a traceback
    code, text = outputs[3]
    assert code != 0, text
    assert "Traceback" not in text
    assert "NoSuchBucket" in text
