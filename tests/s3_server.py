"""A real S3-compatible server for the tests: moto in server mode on 127.0.0.1.

It stands in for AWS S3 (or any S3-compatible store). ncagen reaches it exactly as it reaches
S3 for a user: an `s3://bucket/prefix` --out, pyarrow's S3 filesystem, credentials and endpoint
from the standard AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). The
server runs in a session of its own and is stopped by killing that session. Every request it
serves is logged one per line ("GET /bucket/key ..."), so a test can count what was read.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
import urllib.request

from procs import free_port, kill_session


class S3Server:
    """moto_server on a free port; `env` points AWS clients (and so ncagen) at it."""

    def __init__(self, log_dir: pathlib.Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "S3Server":
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).read()
                return self
            except OSError:
                assert self.proc.poll() is None, self.log_path.read_text()
                assert time.monotonic() < deadline, "moto_server did not come up"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            kill_session(self.proc.pid)
            self.proc.wait()

    def make_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def requests(self) -> list[str]:
        """Request lines served so far ("GET /bucket/key?query", ...)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if '"' in line:
                parts = line.split('"')[1].split()
                if len(parts) >= 2:
                    out.append(f"{parts[0]} {parts[1]}")
        return out

    def apply(self) -> dict:
        """os.environ with this server's AWS variables (for subprocesses)."""
        return {**os.environ, **self.env}
