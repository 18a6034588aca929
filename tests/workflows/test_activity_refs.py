"""Every activity the conversation workflow calls by typed reference is registered by the worker
under that name, with the same input and result types."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity

from activities.deps import ActivityDeps
from core.settings import Settings
from workers.registry import activity_callables
from workflows import activity_refs


def _declared() -> dict[str, Callable[..., Any]]:
    found = {}
    for _, value in inspect.getmembers(activity_refs, inspect.iscoroutinefunction):
        definition = activity._Definition.from_callable(value)
        if definition is not None:
            found[definition.name] = value
    return found


def _signature(fn: Callable[..., Any]) -> tuple[list[Any], Any]:
    hints = typing.get_type_hints(fn)
    params = [hints.get(name) for name in inspect.signature(fn).parameters if name != "self"]
    return params, hints.get("return")


@pytest.fixture(scope="module")
def registered() -> dict[str, Callable[..., Any]]:
    # Building the callables opens no connection: the engine connects on first use.
    settings = Settings(_env_file=None, database_url="postgresql://nobody@127.0.0.1:9/none")  # type: ignore[call-arg]
    deps = ActivityDeps.create(settings)
    found = {}
    for fn in activity_callables(deps):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.name is not None
        found[definition.name] = fn
    return found


def test_there_are_declarations() -> None:
    declared = _declared()
    assert {"agent_step", "prepare_reply", "send_email_reply", "record_inbound_message"} <= set(declared)
    assert set(activity_refs.TOOLS) | {"send_response"} >= {"search_knowledge_base", "escalate_to_human"}


@pytest.mark.parametrize("name", sorted(_declared()))
def test_declaration_matches_the_registered_activity(name: str, registered: dict[str, Callable[..., Any]]) -> None:
    assert name in registered, f"the worker registers no activity named {name!r}"
    assert _signature(_declared()[name]) == _signature(registered[name])
