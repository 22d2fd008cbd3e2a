"""One Airflow DAG bundle, timed inside an Airflow venv's python (benchmarks/bundle.py starts it).

Usage: bundle_driver.py KIND STORAGE BUCKET PREFIX ENDPOINT [VERSION]
KIND: `dagmirror` (DagmirrorBundle; VERSION pins it) or `s3` (the amazon provider's S3DagBundle).
Prints @@INITIALIZED after `initialize()` and waits for a line on stdin before `refresh()` (so a counting
proxy can tell the two apart), then one JSON line: seconds of `initialize()` and of one `refresh()` right
after it (unpinned only), and the number of files under `path`.
"""

import json
import logging
import os
import sys
import tempfile
import time

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp())
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
kind, storage, bucket, prefix, endpoint = sys.argv[1:6]
version = sys.argv[6] if len(sys.argv) > 6 else None
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH"] = storage
logging.disable(logging.CRITICAL)

if kind == "s3":
    from airflow.providers.amazon.aws.bundles.s3 import S3DagBundle

    bundle = S3DagBundle(name="bench", bucket_name=bucket, prefix=prefix)
else:
    from dagmirror.bundle import DagmirrorBundle

    bundle = DagmirrorBundle(
        name="bench", source=f"s3://{bucket}/{prefix}", endpoint_url=endpoint, version=version
    )

started = time.perf_counter()
bundle.initialize()
initialize = time.perf_counter() - started
refresh = None
print("@@INITIALIZED", flush=True)
sys.stdin.readline()  # the harness reads its request counter between the two calls
if version is None:
    started = time.perf_counter()
    bundle.refresh()
    refresh = time.perf_counter() - started
files = sum(len([n for n in names if not n.startswith(".")]) for _, dirs, names in os.walk(bundle.path))
print(json.dumps({"initialize": initialize, "refresh": refresh, "files": files}), flush=True)
