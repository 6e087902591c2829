"""Tool steps (``agents/tools.py``) on a real Redis, under a saver that writes behind."""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as aredis
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from agents.context import Context
from agents.llm import LLMClient
from agents.tools import effect_once
from runs.segment import parent_namespace
from store.checkpoint import AsyncRedisSaver


class State(TypedDict):
    n: int


async def test_a_tool_step_acts_only_once_the_checkpoint_it_started_from_is_stored(
    redis_client: aredis.Redis, key_prefix: str
) -> None:
    # Queued writes wait 30 s for company unless someone hurries them: only the wait
    # effect_once asks for can have stored the step's checkpoint by the time it acts.
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=30.0)
    elsewhere = AsyncRedisSaver(redis_client, prefix=key_prefix)  # what a take-over would read
    stored_when_acting: list[bool] = []

    async def charge(state: State, runtime: Runtime[Context]) -> State:
        info = runtime.execution_info
        assert info is not None

        async def act(key: str) -> dict[str, Any]:
            config: Any = {
                "configurable": {
                    "thread_id": info.thread_id,
                    "checkpoint_ns": parent_namespace(info.checkpoint_ns),  # the graph it runs in
                    "checkpoint_id": info.checkpoint_id,
                }
            }
            stored_when_acting.append(await elsewhere.aget_tuple(config) is not None)
            return {"charged": key}

        await effect_once(runtime, "charge", act)
        return {"n": state["n"] + 1}

    builder = StateGraph(State, context_schema=Context)
    builder.add_node("prepare", lambda s: {"n": s["n"] + 1})
    builder.add_node("charge", charge)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "charge")
    builder.add_edge("charge", END)
    graph = builder.compile(checkpointer=saver)
    async with LLMClient(base_url="http://127.0.0.1:9/v1", model="unused", timeout_s=1) as llm:
        for hook in (saver.astored, None):  # None: the window this closes, shown open
            context = Context(llm=llm, redis=redis_client, key_prefix=key_prefix, checkpoints_stored=hook)
            thread_id = str(uuid.uuid4())
            config: Any = {"configurable": {"thread_id": thread_id}}
            out = await graph.ainvoke({"n": 0}, config, context=context, durability="async")
            assert out == {"n": 2}
            await saver.aflush(thread_id)
    assert stored_when_acting == [True, False]
