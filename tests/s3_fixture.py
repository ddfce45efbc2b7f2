"""An S3-compatible server for the tests: moto's, on 127.0.0.1, started once per session.

The server runs in its own process: some pylance calls (``LanceFragment.count_rows`` with a
filter) hold the GIL while they wait for the object store, so a server thread inside the
test process would never answer them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

BUCKET = "kindred-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
               "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, str]:
        """Everything a store needs to reach the server, given explicitly."""
        return {"aws_endpoint": self.endpoint, "allow_http": "true",
                "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                "aws_region": CREDENTIALS["AWS_REGION"]}

    def uri(self, prefix: str) -> str:
        """``s3://bucket/prefix`` (credentials from the environment)."""
        return f"s3://{self.bucket}/{prefix}"

    def store_uri(self, prefix: str) -> str:
        """A store location with the endpoint in its query (no credentials in it)."""
        return f"{self.uri(prefix)}?aws_endpoint={self.endpoint}&allow_http=true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the moto server exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"the moto server did not answer at {endpoint} within {timeout:.0f} s")


@contextlib.contextmanager
def start_s3() -> Iterator[S3Server]:
    """moto's server on a free port of 127.0.0.1 in a child process, one bucket, and the
    credentials in the environment (as a deployment would give them); all undone after."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    try:
        _wait_ready(endpoint, proc)
        os.environ.update(CREDENTIALS)
        boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_REGION"],
                     aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
                     ).create_bucket(Bucket=BUCKET)
        yield S3Server(endpoint, BUCKET)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
