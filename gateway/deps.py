"""FastAPI dependency aliases (one place, `Annotated[..., Depends()]`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.settings import Settings
from gateway.resources import Resources


# `async def`, not `def`: FastAPI runs sync dependencies in the thread pool, on every request.
async def get_resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.resources.settings  # type: ignore[no-any-return]


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
