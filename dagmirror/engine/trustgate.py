"""The release stage's trust check (signed releases, docs/security.md): between the pointer and the install.

With no trust configured every method lets everything through, so unsigned releases keep working. With
trust, a pointer must verify before its manifest is read (at most `manifest_size` bytes), the manifest must
verify before any body is fetched, and a 304 on a pointer that has since expired is refused as stale. Each
refusal raises trust.Untrusted; the pass turns it into a report naming it (one line, a metric, an audit
record) and DEST stays as it was. Key rotations a pointer carries are remembered in the state.
"""

from __future__ import annotations

from collections.abc import Awaitable

from dagmirror.engine.context import PassContext
from dagmirror.errors import DagmirrorError, IntegrityError, ReleaseError, SourceError
from dagmirror.manifest import MAX_MANIFEST_BYTES, CheckedManifest, Pointer, pointer_payload
from dagmirror.state import InstalledRelease
from dagmirror.trust import TrustPolicy, Untrusted, check_manifest, check_pointer, rotate, stale


class TrustGate:
    def __init__(self, ctx: PassContext) -> None:
        self._ctx = ctx
        self._base = ctx.config.trust
        self.policy: TrustPolicy | None = None  # the base trust with the rotations learned so far

    @property
    def on(self) -> bool:
        return self._base is not None

    def poll_etag(self, installed: InstalledRelease | None) -> str | None:
        """A release installed before trust was configured is not trusted: read its pointer again."""
        if installed is None or (self.on and installed.expires is None):
            return None
        return installed.pointer_etag

    def not_modified(self, installed: InstalledRelease) -> None:
        """A 304: the pointer DEST holds must still be in date (else a freeze looks exactly like this)."""
        if self.on:
            stale(installed.expires, installed.seq, self._ctx.clock())

    def pointer(self, pointer: Pointer, body: bytes, installed: InstalledRelease | None) -> None:
        if self._base is None:
            return
        state = self._ctx.ledger.state
        learned = TrustPolicy(self._base.keys, self._base.threshold)
        learned = rotate(learned, state.rotations)  # what earlier pointers taught, checked again
        policy = rotate(learned, pointer.rotations)
        check_pointer(
            policy,
            pointer_payload(body),
            pointer.signatures,
            seq=pointer.seq,
            release=pointer.release,
            expires=pointer.expires,
            installed=(installed.seq, installed.release) if installed else None,
            now=self._ctx.clock(),
        )
        if pointer.manifest_size is None:
            raise Untrusted(f"pointer seq {pointer.seq} does not say its manifest's size")
        self.policy = policy
        learned_now = [dict(r) for r in policy.rotations if r not in state.rotations]
        if learned_now and not self._ctx.config.dry_run:  # kept even if the manifest is then refused
            state.rotations = [*state.rotations, *learned_now]
            self._ctx.ledger.dirty = True

    def manifest_limit(self, pointer: Pointer) -> int:
        """Bytes of manifest to read at most: exactly what the signed pointer says, with trust."""
        if self._base is None or pointer.manifest_size is None:
            return MAX_MANIFEST_BYTES
        return min(pointer.manifest_size, MAX_MANIFEST_BYTES)

    async def manifest(self, fetch: Awaitable[CheckedManifest]) -> CheckedManifest:
        """The manifest `fetch` reads, verified; with trust, one that does not parse or hash (a swap, a mix of
        releases, a size beyond the signed one) is refused like an unsigned one."""
        try:
            checked = await fetch
        except (ReleaseError, IntegrityError, SourceError) as exc:
            tampered = not isinstance(exc, SourceError) or exc.code == "BodyTooLarge"
            if self.on and tampered:
                raise Untrusted(str(exc)) from None
            raise
        if self.policy is not None:
            self._verify(checked)
        return checked

    def refuse(self, exc: DagmirrorError) -> Untrusted | None:
        """With trust, a pointer that does not parse (another environment's, malformed) is refused."""
        return Untrusted(str(exc)) if self.on and isinstance(exc, ReleaseError) else None

    def _verify(self, checked: CheckedManifest) -> None:
        assert self.policy is not None
        verify_manifest(self.policy, checked, self._ctx.prefix)

    def expires(self, pointer: Pointer) -> float | None:
        return pointer.expires if self.policy is not None else None


def verify_manifest(policy: TrustPolicy, checked: CheckedManifest, prefix: str) -> None:
    """Untrusted unless `policy`'s keys signed the manifest for every path it names (the refused ones too)."""
    paths = [*checked.manifest.files, *(r.key.removeprefix(prefix) for r in checked.rejections)]
    check_manifest(policy, checked.payload, checked.manifest.signatures, paths, checked.release_id)
