"""Each fault the injecting proxy can produce, between the engine and a real S3 server (moto): what the
engine must do about it. The random mix of all of them is the chaos soak (test_reliability_soak.py)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.devtools.proxy import ChaosRule, Fault, ProxyRequest, S3Proxy
from dagmirror.devtools.servers import s3_client
from dagmirror.errors import SourceUnavailable
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy
from dagmirror.source.lean import UntrustedXML, parse_list

from .helpers import put_all, read_tree, sdk_credentials

PREFIX = "dags/"
FILES = {f"team{i % 3}/dag_{i:02d}.py": f"# dag {i}\n".encode() * (40 + i) for i in range(12)}


@pytest.fixture
def seeded(s3: Any, bucket: str) -> str:
    put_all(s3, bucket, PREFIX, FILES)
    return bucket


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[S3Proxy]:
    with S3Proxy(moto_endpoint, list_page_size=3) as p, sdk_credentials():
        yield p


def config(bucket: str, proxy: S3Proxy, dest: Path, **kw: Any) -> MirrorConfig:
    kw.setdefault("retry", RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0))
    return MirrorConfig.create(
        f"s3://{bucket}/{PREFIX}",
        dest,
        endpoint_url=proxy.endpoint_url,
        fsync=False,
        concurrency=4,
        connect_timeout=2,
        read_timeout=2,
        **kw,
    )


async def sync(bucket: str, proxy: S3Proxy, dest: Path, **kw: Any) -> SyncReport:
    async with Mirror(config(bucket, proxy, dest, **kw)) as mirror:
        return await mirror.sync_once()


class FirstTry:
    """Damage the first request of each (op, path) with `fault`; later attempts pass through."""

    def __init__(self, op: str, fault: Fault) -> None:
        self.op, self.fault = op, fault
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: ProxyRequest) -> Fault | None:
        if request.op != self.op:
            return None
        with self.lock:
            self.seen[request.path + "?" + request.query] += 1
            return self.fault if self.seen[request.path + "?" + request.query] == 1 else None


ONE_OF_EACH = {
    "503 SlowDown": Fault(status=503, code="SlowDown"),
    "500 InternalError": Fault(status=500, code="InternalError"),
    "reset before the answer": Fault(reset="before"),
    "reset in the middle of the body": Fault(reset="mid"),
    "silently truncated body": Fault(truncate=True),
    "same-length corruption": Fault(corrupt=True),
    "latency spike": Fault(delay=0.1),
}


@pytest.mark.parametrize("transport", ["lean", "sdk"])
@pytest.mark.parametrize("name", sorted(ONE_OF_EACH))
async def test_a_fault_on_every_first_get_is_retried_and_nothing_bad_is_installed(
    seeded: str, proxy: S3Proxy, tmp_path: Path, name: str, transport: str
) -> None:
    proxy.set_fault(FirstTry("GET", ONE_OF_EACH[name]))
    # mode objects: one faulted GET per file, as counted below (auto adds the pointer's GET)
    report = await sync(seeded, proxy, tmp_path, transport=transport, mode="objects")
    assert (report.downloaded, report.failed) == (len(FILES), 0), report.failures
    assert read_tree(tmp_path) == FILES
    if name == "latency spike":
        assert report.retries == 0
    elif name == "reset before the answer":
        assert report.retries <= len(FILES)  # aiohttp itself retries a reset on a reused idle connection
    else:
        assert report.retries == len(FILES)
    assert sum(proxy.injected().values()) == len(FILES)


@pytest.mark.parametrize(
    ("name", "transport"),
    [(name, "lean") for name in sorted(set(ONE_OF_EACH) - {"same-length corruption"})]
    + [("reset in the middle of the body", "sdk"), ("silently truncated body", "sdk")],
)
async def test_a_fault_on_every_first_list_page_is_retried_and_the_pass_completes(
    seeded: str, proxy: S3Proxy, tmp_path: Path, name: str, transport: str
) -> None:
    proxy.set_fault(FirstTry("LIST", ONE_OF_EACH[name]))
    report = await sync(seeded, proxy, tmp_path, transport=transport)
    assert (report.downloaded, report.failed) == (len(FILES), 0)
    assert read_tree(tmp_path) == FILES


async def test_a_list_page_failing_in_the_middle_of_pagination_aborts_and_deletes_nothing(
    s3: Any, seeded: str, proxy: S3Proxy, tmp_path: Path
) -> None:
    await sync(seeded, proxy, tmp_path)
    for rel in ("team0/dag_00.py", "team1/dag_01.py"):
        s3.delete_object(Bucket=seeded, Key=PREFIX + rel)  # real deletions the broken listing must not apply
    proxy.list_page_size = 2
    proxy.set_fault(lambda r: Fault(status=500, code="InternalError") if r.continued else None)
    with pytest.raises(PassFailed, match="nothing deleted"):
        await sync(seeded, proxy, tmp_path, allow_mass_delete=True)
    assert read_tree(tmp_path) == FILES
    assert proxy.injected()["LIST 500 InternalError"] >= 4  # every retry of the page failed too


@pytest.mark.parametrize("transport", ["lean", "sdk"])
async def test_a_listing_that_silently_leaves_keys_out_deletes_none_of_them(
    s3: Any, seeded: str, proxy: S3Proxy, tmp_path: Path, transport: str
) -> None:
    await sync(seeded, proxy, tmp_path)
    s3.delete_object(Bucket=seeded, Key=PREFIX + "team0/dag_00.py")  # one real deletion
    proxy.set_fault(lambda r: Fault(drop_keys=1) if r.op == "LIST" else None)
    report = await sync(seeded, proxy, tmp_path, transport=transport, allow_mass_delete=True)
    assert proxy.injected()["LIST drop_keys"] >= 4
    assert [t.path for t in report.tombstones] == ["team0/dag_00.py"]  # confirmed gone by a 404
    kept = sorted(f.key for f in report.failures)
    assert kept, "the dropped keys are reported"
    assert all("the listing was incomplete" in f.error for f in report.failures)
    want = {k: v for k, v in FILES.items() if k != "team0/dag_00.py"}
    assert read_tree(tmp_path) == want
    proxy.set_fault(None)
    report = await sync(seeded, proxy, tmp_path)
    assert (report.failed, report.deleted, read_tree(tmp_path)) == (0, 0, want)


async def test_a_truncated_body_of_an_object_with_an_opaque_etag_is_never_installed(
    s3: Any, bucket: str, proxy: S3Proxy, tmp_path: Path
) -> None:
    body = b"# multipart upload: the ETag is not an MD5 and no checksum comes with it\n" * 40
    upload = s3.create_multipart_upload(Bucket=bucket, Key=PREFIX + "mp.py")
    part = s3.upload_part(
        Bucket=bucket, Key=PREFIX + "mp.py", UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=PREFIX + "mp.py",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    proxy.set_fault(lambda r: Fault(truncate=True) if r.op == "GET" else None)
    report = await sync(bucket, proxy, tmp_path)
    assert report.failed == 1
    assert "the listing said" in report.failures[0].error
    assert read_tree(tmp_path) == {}
    proxy.set_fault(None)
    await sync(bucket, proxy, tmp_path)
    assert read_tree(tmp_path) == {"mp.py": body}


def test_a_page_marked_truncated_without_a_continuation_token_is_refused() -> None:
    page = (
        b'<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated>'
        b"<Contents><Key>dags/a.py</Key><ETag>&quot;x&quot;</ETag><Size>1</Size></Contents>"
        b"</ListBucketResult>"
    )
    with pytest.raises(UntrustedXML, match="without a continuation token"):
        parse_list(page)


async def test_the_sdk_listing_refuses_a_truncated_page_without_a_token(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    from dagmirror.source.sdk import SdkSource

    class Client:
        async def list_objects_v2(self, **_: Any) -> dict[str, Any]:
            return {"IsTruncated": True, "Contents": [{"Key": "dags/a.py", "ETag": '"x"', "Size": 1}]}

    source = SdkSource(Client(), "bkt", "http://127.0.0.1:9", AsyncExitStack())
    with pytest.raises(SourceUnavailable, match="truncated page without a token"):
        await source.list_page("dags/", delimiter=False, token=None)


async def test_seeded_chaos_rule_injects_the_same_faults_for_the_same_requests() -> None:
    requests = [ProxyRequest("GET", f"/b/k{i}", "", "GET" if i % 3 else "LIST") for i in range(300)]
    rule, same_seed = ChaosRule(7, rate=0.3), ChaosRule(7, rate=0.3)
    first = [rule(r) for r in requests]
    again = [same_seed(r) for r in requests]
    assert first == again
    kinds = Counter(f.kind for f in first if f is not None)
    assert 60 < sum(kinds.values()) < 120
    assert {"corrupt", "drop_keys", "reset mid", "truncate"} <= set(kinds)
    assert "drop_keys" not in {f.kind for r, f in zip(requests, first, strict=True) if f and r.op == "GET"}


def test_proxy_forwards_damaged_answers_as_described(s3: Any, bucket: str, moto_endpoint: str) -> None:
    body = bytes(range(256)) * 8
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    with S3Proxy(moto_endpoint) as proxy:
        client = s3_client(proxy.endpoint_url)
        proxy.set_fault(lambda r: Fault(corrupt=True) if r.op == "GET" else None)
        damaged = client.get_object(Bucket=bucket, Key="k")["Body"].read()
        assert len(damaged) == len(body)
        assert damaged != body
        proxy.set_fault(lambda r: Fault(truncate=True) if r.op == "GET" else None)
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == body[: len(body) // 2]
        proxy.set_fault(None)
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        assert proxy.injected() == {"GET corrupt": 1, "GET truncate": 1}


async def test_an_unconfirmable_deletion_says_what_clears_it_and_deleting_the_file_by_hand_does(
    s3: Any, seeded: str, proxy: S3Proxy, tmp_path: Path
) -> None:
    gone = "team0/dag_00.py"
    await sync(seeded, proxy, tmp_path)
    s3.delete_object(Bucket=seeded, Key=PREFIX + gone)
    # A 404 without S3's NoSuchKey (an ingress misroute, or a key the server cannot name in XML) never
    # confirms a deletion: the file is kept, and the failure says how to make it stop.
    proxy.set_fault(lambda r: Fault(status=404, code="") if r.op == "GET" and r.path.endswith(gone) else None)
    for _ in range(2):
        report = await sync(seeded, proxy, tmp_path)
        assert [f.key for f in report.failures] == [PREFIX + gone]
        assert "could not be confirmed" in report.failures[0].error
        assert f"delete {gone} from DEST by hand" in report.failures[0].error
        assert (tmp_path / gone).exists()
    (tmp_path / gone).unlink()
    report = await sync(seeded, proxy, tmp_path)
    assert (report.failed, report.deleted) == (0, 0)
    assert read_tree(tmp_path) == {k: v for k, v in FILES.items() if k != gone}
    report = await sync(seeded, proxy, tmp_path, mode="objects")  # auto's pointer probe is a GET 404 too
    assert (report.failed, report.deleted, report.requests.get("GET 404", 0)) == (0, 0, 0)
