"""The naive baseline many teams start from: list with a paginator, then GET each key in turn.

Usage: python -m benchmarks.boto3_loop s3://BUCKET/PREFIX/ DEST
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagmirror.devtools.servers import s3_client


def main() -> None:
    bucket, _, prefix = sys.argv[1].removeprefix("s3://").partition("/")
    dest = Path(sys.argv[2])
    client = s3_client(os.environ["AWS_ENDPOINT_URL"])
    seen: set[Path] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = dest / obj["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            seen.add(path)
    for path in [p for p in dest.rglob("*") if p.is_file() and p not in seen]:
        path.unlink()


if __name__ == "__main__":
    main()
