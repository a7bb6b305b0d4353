"""Task versions on the device: upload, resolve at admission, hot swap, and change events.

A request resolves its task (or pinned version) once, when admitted, and holds a `Lease` on
that version's runtime form until it ends; uploads, rollbacks and deletes only change what
later requests resolve to. An upload validates and builds the runtime form before it stores
anything, and the form is on the device when the upload returns.

Forms are cached by content as well as by name: (task, version, sha256). A task deleted and
uploaded again starts over at version 1, so (task, version) alone could name two artifacts, and
a form built from the old one (by a load that began before the delete) could be served as the
new one. A load that outlives a delete of its task serves the request that started it (which
was admitted before the delete) and is kept by no one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prompt_store.artifact import DEFAULT_MAX_BYTES, Artifact, check_card, check_runtime_size, parse_artifact
from prompt_store.errors import StoreUnavailable, UnknownTask, UnknownVersion
from prompt_store.heads import check_card_labels
from prompt_store.records import ChangeEvent, VersionRecord, check_task_name, parse_card
from prompt_store.spec import ModelSpec
from prompt_store.store import PromptStore
from server.prompts.forms import TaskPrompt
from server.prompts.pool import DevicePool

log = logging.getLogger(__name__)

VersionKey = tuple[str, int]  # (task, version)
FormKey = tuple[str, int, str]  # (task, version, sha256 of the weights)


@dataclass(frozen=True)
class Lease:
    """A task version on the device. From `acquire` it is pinned: give it back with `release`."""

    record: VersionRecord
    prompt: TaskPrompt
    cached: bool = True  # False: held by the one request that loaded it, outside the device cache

    @property
    def key(self) -> FormKey:
        return (self.record.task, self.record.version, self.record.sha256)

    @property
    def nbytes(self) -> int:
        return self.prompt.nbytes


@dataclass(frozen=True)
class Uploaded:
    record: VersionRecord
    created: bool  # False: the upload equalled the current version, which is kept; nothing was stored


def same_content(record: VersionRecord, draft: VersionRecord) -> bool:
    """The same tensors, config and card, validated against the same model."""
    fields = ("sha256", "config", "card", "spec_fingerprint")
    return all(getattr(record, name) == getattr(draft, name) for name in fields)


class PromptRegistry:
    def __init__(
        self,
        store: PromptStore,
        spec: ModelSpec,
        build: Callable[[Artifact], TaskPrompt],
        budget_bytes: int,
        max_artifact_bytes: int = DEFAULT_MAX_BYTES,
        cache_pointers: bool = False,
        max_form_bytes: int | None = None,
        dtype_bytes: int = 4,
    ) -> None:
        """`cache_pointers`: keep current-version pointers in memory, kept fresh by the store's
        change events. Only for stores whose events reach every replica (Redis).
        `max_form_bytes`: refuse artifacts whose runtime form would be larger on the device (default:
        the device budget), judged before anything is built, on a model of `dtype_bytes` per value."""
        self.store = store
        self.spec = spec
        self.build = build
        self.pool: DevicePool[FormKey, Lease] = DevicePool(budget_bytes)
        self.max_artifact_bytes = max_artifact_bytes
        self.max_form_bytes = budget_bytes if max_form_bytes is None else max_form_bytes
        self.dtype_bytes = dtype_bytes
        self.cache_pointers = cache_pointers
        self.pointers: dict[str, int] = {}
        self.digests: dict[VersionKey, str] = {}  # the content of each version whose form is (or was) cached
        self._loading: dict[VersionKey, asyncio.Future[Lease]] = {}
        self._deletes: dict[str, int] = {}  # per task, how many deletes this replica has seen

    async def upload(
        self, task: str, config_bytes: bytes, weights_bytes: bytes, card_bytes: bytes | None = None
    ) -> Uploaded:
        """Validate, build the runtime form, store the next version and make it current; unless the
        artifact and card are those of the current version, which is then kept and nothing is created."""
        check_task_name(task)
        card = parse_card(card_bytes) if card_bytes is not None else None
        artifact = await asyncio.to_thread(self._parse, config_bytes, weights_bytes)
        if card is not None:
            check_card(card, artifact, self.spec)
        check_card_labels(card, artifact.num_labels)
        draft = VersionRecord(
            task=task,
            peft_type=artifact.peft_type,
            num_virtual_tokens=artifact.num_virtual_tokens,
            num_tasks=artifact.num_tasks,
            config=artifact.config,
            sha256=artifact.sha256,
            nbytes=artifact.nbytes,
            spec_fingerprint=self.spec.fingerprint(),
            card=card,
        )
        current = await self._current_record(task)
        if current is not None and same_content(current, draft):
            return Uploaded(current, created=False)
        prompt = await asyncio.to_thread(self.build, artifact)
        record = await self.store.create_version(draft, config_bytes, weights_bytes)
        self._keep(Lease(record, prompt))
        self.pointers.pop(task, None)  # re-read: a racing upload may have committed a newer one
        return Uploaded(record, created=True)

    async def _current_record(self, task: str) -> VersionRecord | None:
        try:
            return await self.store.get_record(task, await self.store.current_version(task))
        except (UnknownTask, UnknownVersion):  # a new task (or one deleted while we read)
            return None

    def _parse(self, config_bytes: bytes, weights_bytes: bytes) -> Artifact:
        """Validate an artifact, and its runtime size before anything is built (blocking: run in a thread)."""
        artifact = parse_artifact(config_bytes, weights_bytes, self.spec, self.max_artifact_bytes)
        check_runtime_size(artifact, self.spec, self.dtype_bytes, self.max_form_bytes)
        return artifact

    def _keep(self, lease: Lease, pinned: bool = False) -> Lease:
        """Cache a form under its content and remember which content its version has."""
        kept = self.pool.put(lease.key, lease, pinned=pinned)
        if len(self.digests) > 2 * len(self.pool) + 64:  # forget versions the pool has evicted since
            self.digests = {(task, version): digest for task, version, digest in self.pool.lru_keys()}
        self.digests[(lease.record.task, lease.record.version)] = lease.record.sha256
        return kept

    async def acquire(self, task: str, version: int | None = None) -> Lease:
        """Resolve `task` (its current version unless `version` pins one) and pin its form."""
        if version is None:
            version = await self.current_version(task)
        # A version whose content this replica has not seen yet misses (and counts as a miss) like any other.
        cached = self.pool.acquire((task, version, self.digests.get((task, version), "")))
        return cached or await self._load((task, version))

    def release(self, lease: Lease) -> None:
        if lease.cached:
            self.pool.release(lease.key)

    async def current_version(self, task: str) -> int:
        check_task_name(task)
        if task in self.pointers:
            return self.pointers[task]
        version = await self.store.current_version(task)
        if self.cache_pointers:
            # A change event applied while we read is newer than what we read: keep it.
            return self.pointers.setdefault(task, version)
        return version

    async def _load(self, key: VersionKey) -> Lease:
        """A miss: read the version from the store and build its form off the event loop, once."""
        deletes = self._deletes.get(key[0], 0)
        pending = self._loading.get(key)
        if pending is not None:
            return self._pin(await asyncio.shield(pending), deletes)
        pending = asyncio.get_running_loop().create_future()
        self._loading[key] = pending
        try:
            stored = await self.store.get_version(*key)
            artifact = await asyncio.to_thread(self._parse, stored.config_bytes, stored.weights_bytes)
            prompt = await asyncio.to_thread(self.build, artifact)
            pending.set_result(Lease(stored.record, prompt))
        except BaseException as error:
            pending.set_exception(error)
            pending.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            if self._loading.get(key) is pending:  # a delete may have let a newer load take the name
                del self._loading[key]
        return self._pin(pending.result(), deletes)

    def _pin(self, loaded: Lease, deletes_before: int) -> Lease:
        """Pin a loaded form for one request. If its task was deleted while it loaded, the form may be
        the old artifact of a name since reused: it serves only the request that was waiting for it."""
        if self._deletes.get(loaded.record.task, 0) != deletes_before:
            return dataclasses.replace(loaded, cached=False)
        return self._keep(loaded, pinned=True)

    async def rollback(self, task: str, version: int) -> VersionRecord:
        record = await self.store.rollback(task, version)
        self.pointers.pop(task, None)
        return record

    async def delete(self, task: str) -> None:
        await self.store.delete_task(task)
        self.forget(task)

    def forget(self, task: str) -> None:
        """Drop a task's pointer and forms; requests already holding a form finish with it."""
        self._deletes[task] = self._deletes.get(task, 0) + 1
        self.pointers.pop(task, None)
        for version in [key for key in self.digests if key[0] == task]:
            del self.digests[version]
        for version in [key for key in self._loading if key[0] == task]:
            del self._loading[version]  # its waiters still get it; later requests load afresh
        for key in self.pool.lru_keys():
            if key[0] == task:
                self.pool.discard(key)

    async def apply(self, event: ChangeEvent) -> None:
        """Follow a change made by any replica."""
        if event.kind == "resync":
            await self.resync()
        elif event.kind == "delete":
            self.forget(event.task)
        elif self.cache_pointers and event.version is not None:
            self.pointers[event.task] = event.version

    async def resync(self) -> None:
        """After (re)subscribing, events may have been missed: re-read pointers, drop stale forms.

        Everything is read before anything changes, so a store that fails midway leaves this
        replica serving what it knew; changes after the subscription arrive as events after this.
        """
        currents = await self.store.list_tasks()
        stale = []
        for task, version, digest in self.pool.lru_keys():
            try:
                record = await self.store.get_record(task, version) if task in currents else None
            except (UnknownTask, UnknownVersion):
                record = None
            if record is None or record.sha256 != digest:
                stale.append((task, version, digest))
        self.pointers = dict(currents) if self.cache_pointers else {}
        for task, version, digest in stale:
            self.pool.discard((task, version, digest))
            if self.digests.get((task, version)) == digest:
                del self.digests[(task, version)]

    async def watch(self, retry_seconds: float = 0.5) -> None:
        """Apply the store's change events until cancelled, resubscribing when the store comes back.

        While the store is away, pointers and forms already known keep serving. Every
        subscription starts with a resync, so changes made meanwhile are caught up.
        """
        while True:
            try:
                async for event in self.store.events():
                    await self.apply(event)
            except StoreUnavailable as error:
                log.warning("registry events lost (%s); resubscribing in %.1fs", error.message, retry_seconds)
            except Exception:  # a bad event or an unexpected reply must not end the watch for good
                log.exception("registry events failed; resubscribing in %.1fs", retry_seconds)
            await asyncio.sleep(retry_seconds)
