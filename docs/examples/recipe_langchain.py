"""Report a LangChain or LangGraph run's steps to Felix as agents, from its callbacks."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from local_felix import local_felix

from felix.client import SyncFelixClient, SyncRun


class FelixCallbackHandler(BaseCallbackHandler):
    """Publishes each step of a run as a Felix agent and each model answer as its output.

    A step is a LangGraph node (its ``langgraph_node`` metadata) or a runnable
    whose ``run_name`` is in ``steps``. Models report no confidence, so every
    output carries ``confidence``. Errors inside a step are published as
    non-fatal errors; the run's own ``with`` block turns an escaping exception
    into the fatal one.
    """

    raise_error = True  # a publish that fails stops the run instead of passing silently

    def __init__(self, run: SyncRun, steps: set[str], confidence: float = 1.0) -> None:
        self.run = run
        self.steps = steps
        self.confidence = confidence
        self._agents: dict[UUID, str] = {}  # LangChain run id -> Felix agent id
        self._numbers = itertools.count(1)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        step = (metadata or {}).get("langgraph_node") or kwargs.get("name")
        if step in self.steps and parent_run_id not in self._agents:
            agent_id = f"{step}-{next(self._numbers)}"
            self._agents[run_id] = agent_id
            self.run.agent_spawned(agent_id, agent_type=str(step))
        elif parent_run_id in self._agents:  # inside a step: the step's agent
            self._agents[run_id] = self._agents[parent_run_id]

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id in self._agents:
            self._agents[run_id] = self._agents[parent_run_id]

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        agent_id = self._agents.get(run_id)
        if agent_id is not None:
            text = response.generations[0][0].text
            self.run.agent_output(agent_id, text, self.confidence)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        agent_id = self._agents.get(run_id)
        if agent_id is not None and not agent_id.endswith("!"):
            self.run.error(f"{agent_id} failed: {error}", agent_id=agent_id)
            self._agents[run_id] = agent_id + "!"  # reported once, not by every parent


def research_chain(model: Runnable[Any, Any]) -> Runnable[Any, str]:
    """Three steps, each a prompt and a model call, named so the handler sees them."""

    def step(name: str, instruction: str) -> Runnable[Any, str]:
        prompt = ChatPromptTemplate.from_messages([("human", instruction)])
        chain: Runnable[Any, str] = prompt | model | StrOutputParser()
        return chain.with_config(run_name=name)

    research = step("research", "Find sources about: {question}")
    critic = step("critic", "Criticise these findings: {text}")
    writer = step("writer", "Write the answer from: {text}")
    as_text = {"text": lambda answer: answer}
    return research | as_text | critic | as_text | writer


def main() -> None:
    model = FakeListChatModel(
        responses=["Three papers found.", "The second is weak.", "Two papers agree: yes."]
    )
    with local_felix() as base_url, SyncFelixClient(base_url) as felix_client:
        with felix_client.run(task="Do agents need tools?") as run:
            handler = FelixCallbackHandler(run, steps={"research", "critic", "writer"})
            answer = research_chain(model).invoke(
                {"question": "Do agents need tools?"}, config={"callbacks": [handler]}
            )
            run.synthesis(answer, final=True)
            run.result = {"answer": answer}
        for event in felix_client.events(run.workflow_id):
            print(event["seq"], event["type"], event.get("agent_id", ""), event.get("content", ""))


if __name__ == "__main__":
    main()
