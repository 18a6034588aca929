"""Channel configs: per-channel tone, length limit, greeting and signature (one row per channel)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class ChannelStyle:
    """A row of channel_configs as the reply formatter reads it."""

    channel: str
    tone: str
    max_response_length: int
    greeting: str | None
    signature: str | None


async def get_style(session: AsyncSession, *, channel: str) -> ChannelStyle:
    """The channel's reply style (every channel has a row, seeded by migration 0001)."""
    row = (
        await session.execute(
            text(
                "SELECT channel, tone, max_response_length, greeting, signature FROM channel_configs "
                "WHERE channel = :ch"
            ),
            {"ch": channel},
        )
    ).one()
    return ChannelStyle(row.channel, row.tone, row.max_response_length, row.greeting, row.signature)
