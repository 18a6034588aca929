"""FastAPI dependency aliases (one place, `Annotated[..., Depends()]`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.resources import Resources


# `async def`, not `def`: FastAPI runs sync dependencies in the thread pool, on every request.
async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources  # set by the app's lifespan
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]
