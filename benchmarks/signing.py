"""What signed releases cost a mirror per release: verifying a pointer and a manifest, next to parsing the
same manifest unsigned (what every release already costs), at 1k and 10k files. Pure CPU, no server.

    python -m benchmarks.signing [--files 1000 10000] [--repeat 20]
    python -m benchmarks.signing --cold [--files 1000 10000] [--runs 3]

Per size: the median of `repeat` runs of (a) parse_manifest of the unsigned manifest, (b) parse_manifest of
the signed one plus trust.check_manifest (canonical payload, one Ed25519 verify, every path's scope), (c) a
signed pointer's check (payload, one verify, seq, expiry), (d) signing a manifest (the deploy's side). The
ratio (b)/(a) is the figure to quote: it is measured against its peer in the same run.

--cold (moto server): per size, the same tree published unsigned into one bucket and signed into another
(tests/releases.py), then cold passes alternating between a mirror without trust and one with trust (fresh
DEST each), the median of `runs`, and the signed mirror's no-op poll (its requests).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import moto_server, s3_client
from dagmirror.manifest import FileEntry, Manifest, Pointer, parse_manifest, pointer_payload, sha256_hex
from dagmirror.trust import KeySigner, TrustPolicy, check_manifest, check_pointer, generate_ed25519
from tests.helpers import sdk_credentials
from tests.releases import publish

PREFIX = "dags/prod/"


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(files: int, repeat: int) -> dict[str, Any]:
    signer = KeySigner(generate_ed25519())
    policy = TrustPolicy((signer.public,))
    entries = {
        f"team{i % 20}/dag_{i:06}.py": FileEntry(sha256_hex(str(i).encode()), 1000 + i) for i in range(files)
    }
    manifest = Manifest(PREFIX, entries, time.time(), 7, "a" * 64, {"user": "ci"}, "ci-host")
    plain = manifest.encode()
    signed = replace(manifest, signatures=(signer.sign_now(plain),)).encode()
    plain_id, signed_id = sha256_hex(plain), sha256_hex(signed)
    pointer = Pointer(PREFIX, signed_id, 7, time.time(), files, 0, None, expires=time.time() + 3600,
                      manifest_size=len(signed))  # fmt: skip
    pointer_body = replace(pointer, signatures=(signer.sign_now(pointer.encode()),)).encode()

    def verify_manifest() -> None:
        checked = parse_manifest(signed, release_id=signed_id, prefix=PREFIX)
        check_manifest(
            policy, checked.payload, checked.manifest.signatures, checked.manifest.files, signed_id
        )

    def verify_pointer() -> None:
        doc = orjson.loads(pointer_body)
        check_pointer(policy, pointer_payload(pointer_body), doc["signatures"], seq=7, release=signed_id,
                      expires=doc["expires"], installed=(6, "b" * 64), now=time.time())  # fmt: skip

    unsigned = _median(lambda: parse_manifest(plain, release_id=plain_id, prefix=PREFIX), repeat)
    verified = _median(verify_manifest, repeat)
    return {
        "files": files,
        "manifest_bytes": len(signed),
        "parse_unsigned_ms": round(unsigned * 1e3, 2),
        "parse_and_verify_signed_ms": round(verified * 1e3, 2),
        "ratio": round(verified / unsigned, 2),
        "pointer_verify_ms": round(_median(verify_pointer, repeat) * 1e3, 3),
        "sign_manifest_ms": round(_median(lambda: signer.sign_now(manifest.encode()), repeat) * 1e3, 2),
    }


async def _cold(cfg: MirrorConfig) -> tuple[float, dict[str, int], str | None]:
    async with Mirror(cfg) as mirror:
        started = time.perf_counter()
        report = await mirror.sync_once()
        return time.perf_counter() - started, report.requests, report.untrusted


def measure_cold(endpoint: str, files: int, runs: int, workdir: Path) -> dict[str, Any]:
    signer = KeySigner(generate_ed25519())
    trust = workdir / "trust.toml"
    trust.write_text(f'[[keys]]\npublic = """\n{signer.public.pem}"""\n')
    s3 = s3_client(endpoint)
    tree = {f"team{i % 20}/dag_{i:05}.py": f"# dag {i % 100}\n".encode() * 40 for i in range(files)}
    buckets = {}
    for kind in ("unsigned", "signed"):
        buckets[kind] = f"bench-{uuid.uuid4().hex[:10]}"
        create_bucket(s3, buckets[kind])
        publish(s3, buckets[kind], PREFIX, tree, signer=signer if kind == "signed" else None)
    seconds: dict[str, list[float]] = {"unsigned": [], "signed": []}
    for run in range(runs):
        for kind in ("unsigned", "signed"):
            dest = workdir / f"{kind}-{files}-{run}"
            cfg = MirrorConfig.create(f"s3://{buckets[kind]}/{PREFIX}", dest, endpoint_url=endpoint,
                                      trust=str(trust) if kind == "signed" else None)  # fmt: skip
            took, _, untrusted = asyncio.run(_cold(cfg))
            assert untrusted is None, untrusted
            seconds[kind].append(took)
    _, noop, _ = asyncio.run(_cold(cfg))
    unsigned, signed = statistics.median(seconds["unsigned"]), statistics.median(seconds["signed"])
    return {"files": files, "cold_unsigned_s": round(unsigned, 3), "cold_signed_s": round(signed, 3),
            "ratio": round(signed / unsigned, 3), "signed_noop_requests": noop}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="cold starts against moto server")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.cold:
        for files in args.files:
            print(orjson.dumps(measure(files, args.repeat)).decode())
        return
    with moto_server() as server, sdk_credentials(), tempfile.TemporaryDirectory() as tmp:
        for files in args.files:
            print(orjson.dumps(measure_cold(server.endpoint_url, files, args.runs, Path(tmp))).decode())


if __name__ == "__main__":
    main()
