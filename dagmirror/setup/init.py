"""`dagmirror bucket init`: read the bucket's configuration, plan (bucketplan.py), apply the plan in a
safe order. There is no compare-and-swap on bucket configuration: two admins running init at once could
each write a document the other read before; run it from one place."""

from __future__ import annotations

from dagmirror.setup.bucketplan import BucketPlan, BucketSpec, Current, plan
from dagmirror.setup.ports import BucketAdmin


async def inspect(admin: BucketAdmin) -> Current:
    if not await admin.bucket_exists():
        return Current(exists=False)
    return Current(
        exists=True,
        versioning=await admin.get_versioning(),
        public_access_block=await admin.get_public_access_block(),
        policy=await admin.get_policy(),
        lifecycle=await admin.get_lifecycle(),
        notification=await admin.get_notification(),
    )


async def init_bucket(admin: BucketAdmin, spec: BucketSpec, *, dry_run: bool) -> BucketPlan:
    """The plan, applied unless `dry_run`. Order: the bucket, then the public access block (nothing is
    ever public, even for a moment), versioning, the policy, lifecycle, notifications."""
    wanted = plan(spec, await inspect(admin))
    if dry_run or wanted.empty:
        return wanted
    if wanted.create:
        await admin.create_bucket(spec.region)
    if wanted.public_access_block is not None:
        await admin.put_public_access_block(wanted.public_access_block)
    if wanted.versioning:
        await admin.enable_versioning()
    if wanted.policy is not None:
        await admin.put_policy(wanted.policy)
    if wanted.lifecycle is not None:
        await admin.put_lifecycle(wanted.lifecycle)
    if wanted.notification is not None:
        await admin.put_notification(wanted.notification)
    return wanted
