"""Send the capture spool to S3: s3://<bucket>/<prefix>/<YYYY-MM-DD>/<model component>/<anomaly|normal>/<file>.

    python -m lookout_edge.uploader --spool DIR --bucket B [--prefix P] [--endpoint-url URL] [--once]

Complete items go oldest first, each image, then its mask, then its JSON; a file is removed from the spool once S3
has it. Before each PUT the uploader records the key and the file's MD5 in ``.in-flight``, and removes that record
after removing the file. After a crash, the one file that record names is checked with HEAD: if S3 already holds
those bytes (ETag is the MD5 for a single PUT), it is not sent again. A file is therefore never uploaded twice, and
nothing is lost. A failed request (network down, S3 refusing) ends the pass; the next pass starts again after a
back-off that doubles up to MAX_BACKOFF_S. The S3 client comes from the caller (boto3 with the device's credentials).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import sys
import threading
from pathlib import Path

from .capture import Spool, SpoolItem

IN_FLIGHT = ".in-flight"
MAX_BACKOFF_S = 300.0
log = logging.getLogger("lookout_edge.uploader")


class SpoolUploader:
    def __init__(self, spool: Spool, s3_client, bucket: str, prefix: str = ""):
        self.spool = spool
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uploaded = 0
        self.skipped = 0  # found already in S3 after a crash, so not sent again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def key_for(self, path: Path) -> str:
        relative = path.relative_to(self.spool.root).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def recover(self) -> None:
        """Settle the file a crash left in flight: removed if S3 has its bytes, else left to be sent."""
        record_path = self.spool.root / IN_FLIGHT
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record_path.unlink(missing_ok=True)
            return
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=record["key"])
            landed = head["ETag"].strip('"') == record["md5"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            landed = False
        if landed:
            (self.spool.root / record["path"]).unlink(missing_ok=True)
            self.skipped += 1
            log.info(
                "s3://%s/%s had arrived before the uploader stopped; not sending it again", self.bucket, record["key"]
            )
        record_path.unlink()

    def _upload(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return  # evicted by the cap, or sent already
        key, md5 = self.key_for(path), hashlib.md5(data)
        record = self.spool.root / IN_FLIGHT
        tmp = record.with_name(IN_FLIGHT + ".tmp")
        tmp.write_text(
            json.dumps({"key": key, "md5": md5.hexdigest(), "path": path.relative_to(self.spool.root).as_posix()})
        )
        tmp.replace(record)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentMD5=base64.b64encode(md5.digest()).decode())
        path.unlink(missing_ok=True)
        record.unlink()
        self.uploaded += 1

    def _finish(self, item: SpoolItem) -> None:
        for directory in (item.directory, item.directory.parent, item.directory.parent.parent):
            try:
                directory.rmdir()  # only when empty
            except OSError:
                break

    def upload_pending(self) -> int:
        """One pass over the spool; the number of files sent. Raises on the first failed request."""
        self.recover()
        before = self.uploaded
        for item in self.spool.items():
            if self._stop.is_set():
                break
            for path in item.files():
                self._upload(path)
            self._finish(item)
        return self.uploaded - before

    def run(self, interval_s: float) -> None:
        backoff = interval_s
        while not self._stop.is_set():
            try:
                sent = self.upload_pending()
                if sent:
                    log.info("uploaded %d files to s3://%s/%s", sent, self.bucket, self.prefix)
                backoff = interval_s
            except Exception as exc:  # the network or S3: try again later, keeping every file
                log.warning(
                    "uploading the capture spool failed (%s: %s); retrying in %.0f s",
                    type(exc).__name__,
                    str(exc)[:300],
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self._stop.wait(interval_s)

    def start(self, interval_s: float) -> SpoolUploader:
        self._thread = threading.Thread(target=self.run, args=(interval_s,), name="spool-uploader", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def s3_client(endpoint_url: str = "", region: str = ""):
    """boto3's S3 client with the device's credentials (on Greengrass, the Token Exchange Service's) and retries."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookout_edge.uploader", description=__doc__.splitlines()[0])
    parser.add_argument("--spool", type=Path, required=True, help="the capture spool directory")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--endpoint-url", default="", help="an S3 endpoint other than AWS's")
    parser.add_argument("--region", default="")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes (default 30)")
    parser.add_argument("--once", action="store_true", help="one pass, then exit (1 if a request failed)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The cap and the retention belong to the agent's capture; here nothing is evicted.
    uploader = SpoolUploader(
        Spool(args.spool, max_bytes=1 << 62, retention_days=1e6),
        s3_client(args.endpoint_url, args.region),
        args.bucket,
        args.prefix,
    )
    if args.once:
        try:
            uploader.upload_pending()
        except Exception as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"uploaded {uploader.uploaded} files; {uploader.skipped} had arrived before a restart", flush=True)
        return 0
    uploader.run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
