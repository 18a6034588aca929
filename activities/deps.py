"""What activities need from the outside world, built once per worker process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.settings import Settings
from crm.db import create_engine, create_sessionmaker, transaction
from workflows.contracts import ToolInput

if TYPE_CHECKING:
    from kb.embeddings import Embedder


@dataclass
class ActivityDeps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _embedder: Embedder | None = field(default=None, init=False)

    @classmethod
    def create(cls, settings: Settings) -> ActivityDeps:
        # Every caller is an activity that Temporal retries: no pre-ping round trip per checkout.
        engine = create_engine(settings, pre_ping=False)
        return cls(settings=settings, engine=engine, sessions=create_sessionmaker(engine))

    def embedder(self) -> Embedder:
        """The configured embedding model, loaded on first use."""
        if self._embedder is None:
            from kb.embeddings import create_embedder

            self._embedder = create_embedder(self.settings)
        return self._embedder

    async def close(self) -> None:
        await self.engine.dispose()

    async def tool_arguments(self, inp: ToolInput) -> dict[str, Any]:
        """The arguments the model gave this tool call (stored by agent_step, not in history)."""
        async with self.sessions() as session:
            payload = await session.scalar(text("SELECT payload FROM agent_steps WHERE id = :id"), {"id": inp.step_id})
        for call in (payload or {}).get("tool_calls", []):
            if call.get("id") == inp.call_id:
                try:
                    args = json.loads(call.get("arguments") or "{}")
                except json.JSONDecodeError:
                    return {}
                return args if isinstance(args, dict) else {}
        return {}

    async def store_tool_result(self, inp: ToolInput, name: str, result: dict[str, Any]) -> None:
        """The tool's output for the model's next step (idempotent per call id)."""
        async with transaction(self.sessions) as session:
            await session.execute(
                text(
                    "INSERT INTO agent_steps (conversation_id, turn, step, role, tool_call_id, payload) "
                    "VALUES (:c, :t, :s, 'tool', :id, CAST(:p AS jsonb)) "
                    "ON CONFLICT (conversation_id, turn, step, tool_call_id) DO UPDATE SET payload = EXCLUDED.payload"
                ),
                {
                    "c": inp.conversation_id,
                    "t": inp.turn,
                    "s": inp.step,
                    "id": inp.call_id,
                    "p": json.dumps({"name": name, "result": result}, default=str),
                },
            )
