"""The Redis backend, for replicas that share one registry.

Keys, all under one prefix (default `promptswap:`):

    tasks                      set of task names
    task:<t>:counter           last version number handed out (INCR: unique under races)
    task:<t>:current           current version
    task:<t>:versions          sorted set of visible versions
    task:<t>:v:<n>:record      VersionRecord JSON;  :config / :weights  the uploaded bytes
    staging:<id>:config        bytes of an upload not yet committed (expire after an hour)

An upload writes its bytes to staging keys, takes a version number, then one Lua script
renames the staging keys into place, makes the version visible and current, and publishes a
change event. A crash before that script leaves only expiring staging keys behind.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prompt_store.errors import Conflict, StoreUnavailable, UnknownTask, UnknownVersion
from prompt_store.records import ChangeEvent, VersionRecord, check_task_name
from prompt_store.store import PromptStore, StoredVersion

STAGING_SECONDS = 3600
T = TypeVar("T")

# KEYS: counter, current, versions, tasks, staged config, staged weights, config, weights, record
# ARGV: version, record JSON, task, channel, event JSON
_COMMIT = """
local counter = redis.call('GET', KEYS[1])
if not counter or tonumber(counter) < tonumber(ARGV[1]) then
  return redis.error_reply('CONFLICT task was deleted during the upload')
end
if redis.call('EXISTS', KEYS[5]) == 0 or redis.call('EXISTS', KEYS[6]) == 0 then
  return redis.error_reply('CONFLICT staged upload expired')
end
redis.call('RENAME', KEYS[5], KEYS[7])
redis.call('RENAME', KEYS[6], KEYS[8])
redis.call('PERSIST', KEYS[7])
redis.call('PERSIST', KEYS[8])
redis.call('SET', KEYS[9], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[2], ARGV[1])
  current = tonumber(ARGV[1])
end
redis.call('SADD', KEYS[4], ARGV[3])
local event = string.gsub(ARGV[5], '"version":0', '"version":' .. current)
redis.call('PUBLISH', ARGV[4], event)
return current
"""

# KEYS: versions, current; ARGV: version, channel, event JSON
_ROLLBACK = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return redis.error_reply('UNKNOWN version')
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: versions, tasks, counter, current; ARGV: task key prefix, task, channel, event JSON
_DELETE = """
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then
  return redis.error_reply('UNKNOWN task')
end
for _, v in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local base = ARGV[1] .. 'v:' .. v .. ':'
  redis.call('DEL', base .. 'record', base .. 'config', base .. 'weights')
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class RedisStore(PromptStore):
    shares_events = True

    def __init__(self, client: redis.Redis, subscriber: redis.Redis, prefix: str = "promptswap:") -> None:
        super().__init__()
        self.client = client
        self.subscriber = subscriber  # no read timeout: a subscription may sit idle for hours
        self.prefix = prefix
        self.channel = f"{prefix}events"
        self._commit = client.register_script(_COMMIT)
        self._rollback = client.register_script(_ROLLBACK)
        self._delete = client.register_script(_DELETE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "promptswap:") -> RedisStore:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        # No retries on the subscription, ever (from_url's default, pinned here): a retry resubscribes
        # silently and the events published meanwhile are lost unnoticed. The registry's watch
        # reconnects instead and resyncs each time (tests/deploy/test_replicas.py shows the difference).
        subscriber = redis.Redis.from_url(
            url, socket_connect_timeout=2, health_check_interval=30, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, subscriber, prefix)

    def _key(self, task: str, *parts: object) -> str:
        return ":".join([f"{self.prefix}task", check_task_name(task), *map(str, parts)])

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise StoreUnavailable(f"Redis registry does not answer: {error}") from None

    async def create_version(self, draft: VersionRecord, config_bytes: bytes, weights_bytes: bytes) -> VersionRecord:
        task = draft.task
        staged = f"{self.prefix}staging:{uuid.uuid4().hex}"

        async def stage() -> int:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(f"{staged}:config", config_bytes, ex=STAGING_SECONDS)
                pipe.set(f"{staged}:weights", weights_bytes, ex=STAGING_SECONDS)
                await pipe.execute()
            return int(await self.client.incr(self._key(task, "counter")))

        version = await self._call(stage)
        record = draft.model_copy(update={"version": version, "created_at": time.time()})
        event = ChangeEvent(kind="version", task=task, version=0).model_dump_json()
        keys = [
            self._key(task, "counter"), self._key(task, "current"), self._key(task, "versions"),
            f"{self.prefix}tasks", f"{staged}:config", f"{staged}:weights",
            self._key(task, "v", version, "config"), self._key(task, "v", version, "weights"),
            self._key(task, "v", version, "record"),
        ]  # fmt: skip
        args = [version, record.to_json(), task, self.channel, event]
        await self._run_script(self._commit, keys, args)
        return record

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._call(lambda: script(keys=keys, args=args))
        except ResponseError as error:
            message = str(error)
            if message.startswith("CONFLICT"):
                raise Conflict(message.removeprefix("CONFLICT ")) from None
            if message.startswith("UNKNOWN"):
                return None
            raise

    async def get_version(self, task: str, version: int) -> StoredVersion:
        keys = [self._key(task, "v", version, part) for part in ("record", "config", "weights")]
        record, config, weights = await self._call(lambda: self.client.mget(keys))
        if record is None or config is None or weights is None:
            await self._missing(task, version)
        return StoredVersion(VersionRecord.from_json(record), _as_bytes(config), _as_bytes(weights))

    async def get_record(self, task: str, version: int) -> VersionRecord:
        record = await self._call(lambda: self.client.get(self._key(task, "v", version, "record")))
        if record is None:
            await self._missing(task, version)
        return VersionRecord.from_json(_as_bytes(record))

    async def _missing(self, task: str, version: int) -> NoReturn:
        await self.current_version(task)  # raises UnknownTask for a missing task
        raise UnknownVersion(f"task {task!r} has no version {version}")

    async def current_version(self, task: str) -> int:
        current = await self._call(lambda: self.client.get(self._key(task, "current")))
        if current is None:
            raise UnknownTask(f"task {task!r} does not exist")
        return int(current)

    async def list_versions(self, task: str) -> list[VersionRecord]:
        await self.current_version(task)
        versions = await self._call(lambda: self.client.zrange(self._key(task, "versions"), 0, -1))
        return [await self.get_record(task, int(_as_bytes(v))) for v in versions]

    async def list_tasks(self) -> dict[str, int]:
        names = sorted(
            _as_bytes(n).decode() for n in await self._call(lambda: self.client.smembers(f"{self.prefix}tasks"))
        )
        if not names:
            return {}
        currents = await self._call(lambda: self.client.mget([self._key(n, "current") for n in names]))
        return {name: int(current) for name, current in zip(names, currents, strict=True) if current is not None}

    async def rollback(self, task: str, version: int) -> VersionRecord:
        record = await self.get_record(task, version)
        event = ChangeEvent(kind="rollback", task=task, version=version).model_dump_json()
        keys = [self._key(task, "versions"), self._key(task, "current")]
        if await self._run_script(self._rollback, keys, [version, self.channel, event]) is None:
            raise UnknownVersion(f"task {task!r} has no version {version}")
        return record

    async def delete_task(self, task: str) -> None:
        event = ChangeEvent(kind="delete", task=task).model_dump_json()
        keys = [
            self._key(task, "versions"), f"{self.prefix}tasks", self._key(task, "counter"), self._key(task, "current")
        ]  # fmt: skip
        args = [self._key(task, ""), task, self.channel, event]
        if await self._run_script(self._delete, keys, args) is None:
            raise UnknownTask(f"task {task!r} does not exist")

    async def ping(self) -> None:
        await self._call(self.client.ping)

    async def close(self) -> None:
        await self.client.aclose()
        await self.subscriber.aclose()

    async def events(self) -> AsyncIterator[ChangeEvent]:
        """Every change by any replica, from Redis pub/sub (this store's own included)."""
        pubsub = self.subscriber.pubsub()
        await self._call(lambda: pubsub.subscribe(self.channel))
        try:
            yield ChangeEvent(kind="resync", task="*")  # anything before this moment may have been missed
            while True:
                message = await self._call(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=None))
                if message is not None and message["type"] == "message":
                    yield ChangeEvent.model_validate(json.loads(message["data"]))
        finally:
            await pubsub.aclose()


def _as_bytes(value: object) -> bytes:
    """The client is made without `decode_responses`, so every reply is bytes."""
    assert isinstance(value, bytes), type(value)
    return value
