"""What activities need from the outside world, built once per worker process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.settings import Settings
from crm.db import create_engine, create_read_sessionmaker, create_sessionmaker, transaction
from crm.repositories import agent_steps
from workflows.contracts import ToolInput

if TYPE_CHECKING:
    import openai

    from kb.embeddings import Embedder


@dataclass
class ActivityDeps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _embedder: Embedder | None = field(default=None, init=False)
    _reads: async_sessionmaker[AsyncSession] | None = field(default=None, init=False)
    _openai: openai.AsyncOpenAI | None = field(default=None, init=False)

    @classmethod
    def create(cls, settings: Settings) -> ActivityDeps:
        # Every caller is an activity that Temporal retries: no pre-ping round trip per checkout.
        engine = create_engine(settings, pre_ping=False)
        return cls(settings=settings, engine=engine, sessions=create_sessionmaker(engine))

    def reads(self) -> AsyncSession:
        """A session for reads only: each statement autocommits, no BEGIN/ROLLBACK round trips.

        For what an activity reads before it acts; writes go through `transaction(deps.sessions)`.
        """
        if self._reads is None:
            self._reads = create_read_sessionmaker(self.engine)
        return self._reads()

    def embedder(self) -> Embedder:
        """The configured embedding model, loaded on first use."""
        if self._embedder is None:
            from kb.embeddings import create_embedder

            self._embedder = create_embedder(self.settings)
        return self._embedder

    def openai(self) -> openai.AsyncOpenAI:
        """The model client shared by the agent step and the inbound classifier (one connection pool)."""
        if self._openai is None:
            import openai

            key = self.settings.openai_api_key
            if key is None:  # callers check settings.openai_configured first
                raise RuntimeError("OPENAI_API_KEY is not set")
            self._openai = openai.AsyncOpenAI(
                api_key=key.get_secret_value(),
                base_url=self.settings.openai_base_url,
                max_retries=0,  # Temporal owns retries
                timeout=self.settings.openai_timeout_seconds,
            )
        return self._openai

    async def close(self) -> None:
        if self._openai is not None:
            await self._openai.close()
        await self.engine.dispose()

    async def tool_arguments(self, inp: ToolInput) -> dict[str, Any]:
        """The arguments the model gave this tool call (stored by agent_step, not in history)."""
        async with self.reads() as session:
            raw = await agent_steps.tool_call_arguments(session, step_id=inp.step_id, call_id=inp.call_id)
        if raw is None:
            return {}
        try:
            args = json.loads(raw)
        except json.JSONDecodeError:
            return {}  # the model wrote broken JSON: the tool sees no arguments and says what it lacks
        return args if isinstance(args, dict) else {}

    async def store_tool_result(self, inp: ToolInput, name: str, result: dict[str, Any]) -> None:
        """The tool's output for the model's next step (idempotent per call id)."""
        async with transaction(self.sessions) as session:
            await agent_steps.store_tool_result(
                session,
                conversation_id=inp.conversation_id,
                turn=inp.turn,
                step=inp.step,
                call_id=inp.call_id,
                name=name,
                result=result,
            )
