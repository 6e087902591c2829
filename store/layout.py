"""Key layout of Interlock's records (the checkpointer, API keys and crons —
``store/checkpoint.py``, ``store/apikeys.py``, ``store/crons.py`` — document their own).

Every key of a thread carries the hash tag ``{<thread_id>}``, so a thread's keys share one
Redis Cluster slot and a Lua script may touch them together. ``P`` is the key prefix.

| key                          | type   | holds                                                  |
| ---------------------------- | ------ | ------------------------------------------------------ |
| ``P th:{t}``                 | hash   | thread record: status, metadata, values, interrupts,   |
|                              |        | graph_id, active_run, trace (last segment's trace ids) |
| ``P th:{t}:runs``            | zset   | run ids of the thread, scored by creation time (ms)    |
| ``P th:{t}:pending``         | list   | runs waiting for the thread's active run to finish     |
| ``P run:{t}:<run>``          | hash   | run record: status, assistant, kwargs, timestamps      |
| ``P run:{t}:<run>:ev``       | stream | the run's events, replayable by id (bounded, TTL)      |
| ``P fence:{t}``              | string | ``<run>:<epoch>`` of the thread's current owner; every |
|                              |        | checkpoint and outcome write checks it (fencing)       |
| ``P threads:<tenant>``       | zset   | the tenant's thread ids by creation time (search,      |
|                              |        | count); the thread record's ``tenant`` field owns it   |
| ``P runs:<tenant>``          | zset   | ``<thread>|<run>`` of the tenant's latest runs by      |
|                              |        | creation time (trimmed): the console's runs page       |
| ``P queue``                  | stream | runs ready to execute; consumer group ``workers``      |
| ``P webhooks``               | stream | webhook deliveries of ended runs, written with their   |
|                              |        | outcome; consumer group ``webhooks``                   |
| ``P webhooks:due``           | zset   | deliveries waiting for a retry, by due time (ms); also |
|                              |        | the lease of a retry under way                         |
| ``P webhook:<delivery>``     | hash   | one delivery waiting for a retry: url, body, attempts  |
| ``P webhooks:secret``        | string | signing secret made at first use (when                 |
|                              |        | ``INTERLOCK_WEBHOOK_SECRET`` is unset)                 |
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_GROUP = "workers"
WEBHOOK_GROUP = "webhooks"

DEFAULT_TENANT = "default"
"""The tenant of records written before tenants existed, and of everything when
``INTERLOCK_AUTH=off``."""


@dataclass(frozen=True)
class Layout:
    prefix: str = "il:"

    def thread(self, thread_id: str) -> str:
        return f"{self.prefix}th:{{{thread_id}}}"

    def thread_runs(self, thread_id: str) -> str:
        return f"{self.prefix}th:{{{thread_id}}}:runs"

    def thread_pending(self, thread_id: str) -> str:
        return f"{self.prefix}th:{{{thread_id}}}:pending"

    def run(self, thread_id: str, run_id: str) -> str:
        return f"{self.prefix}run:{{{thread_id}}}:{run_id}"

    def run_prefix(self, thread_id: str) -> str:
        """``run(t, r) == run_prefix(t) + r``; Lua builds run keys from it."""
        return f"{self.prefix}run:{{{thread_id}}}:"

    def events(self, thread_id: str, run_id: str) -> str:
        return f"{self.prefix}run:{{{thread_id}}}:{run_id}:ev"

    def checkpoint_index(self, thread_id: str) -> str:
        """The checkpointer's index of the thread's checkpoints (``store/checkpoint.py``)."""
        return f"{self.prefix}cp:{{{thread_id}}}:i"

    def checkpoint_writes(self, thread_id: str) -> str:
        """The checkpointer's index of the thread's pending writes."""
        return f"{self.prefix}cp:{{{thread_id}}}:x"

    def fence(self, thread_id: str) -> str:
        return f"{self.prefix}fence:{{{thread_id}}}"

    def recent_runs(self, tenant: str) -> str:
        return f"{self.prefix}runs:{tenant}"

    def threads(self, tenant: str) -> str:
        return f"{self.prefix}threads:{tenant}"

    @property
    def queue(self) -> str:
        return f"{self.prefix}queue"

    @property
    def webhooks(self) -> str:
        return f"{self.prefix}webhooks"

    @property
    def webhooks_due(self) -> str:
        return f"{self.prefix}webhooks:due"

    def webhook(self, delivery_id: str) -> str:
        return f"{self.prefix}webhook:{delivery_id}"

    @property
    def webhook_secret(self) -> str:
        return f"{self.prefix}webhooks:secret"
