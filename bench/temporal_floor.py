"""The "Temporal floor" of the end-to-end benchmark: a trivial workflow with no-op activities.

`BenchFloorWorkflow` mirrors the shape of a conversation and nothing else: it waits for a
signal per turn and then runs, one after another, the activities a real turn runs (read from real
histories by bench/e2e_turn.py: the same number, in the same order, local where the real one is
local), each a no-op. The activity at the position of the real turn's reply ("send") reports the
turn on stdout as a JSON line `{"t": <CLOCK_MONOTONIC>, "id": <workflow id>, "turn": n}`, like the
fake Twilio reports a reply;
the activities after it (the real turn's metrics) follow. Same Temporal server, same worker
limits as `crm-fte worker` (workers/worker.py), default sandboxed workflow runner.

    .venv/bin/python bench/temporal_floor.py --address 127.0.0.1:7233 --task-queue bench-floor
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow

FLOOR_WORKFLOW = "BenchFloorWorkflow"
TURN_SIGNAL = "turn"


@dataclass
class FloorTurn:
    """One turn's activities in order, each "local" (a local activity), "activity" (a regular one)
    or "reply" (the regular activity at the position of the real turn's send, which reports)."""

    steps: list[str] = field(default_factory=list)


@dataclass
class FloorInput:
    turns: list[FloorTurn] = field(default_factory=list)


@dataclass
class TurnDone:
    workflow_id: str
    turn: int


@activity.defn(name="bench_noop")
async def noop() -> None:
    """Does nothing: what is left is Temporal's cost of scheduling and completing an activity."""


@activity.defn(name="bench_turn_done")
async def turn_done(done: TurnDone) -> None:
    """The floor's "reply": tell the benchmark the turn is answered."""
    sys.stdout.write(json.dumps({"t": time.monotonic(), "id": done.workflow_id, "turn": done.turn}) + "\n")
    sys.stdout.flush()


@workflow.defn(name=FLOOR_WORKFLOW)
class BenchFloorWorkflow:
    """Per signal, the activities a real turn runs (as no-ops); nothing else."""

    def __init__(self) -> None:
        self.waiting = 0

    @workflow.signal(name=TURN_SIGNAL)
    def turn(self) -> None:
        self.waiting += 1

    @workflow.run
    async def run(self, inp: FloorInput) -> int:
        timeout = timedelta(seconds=30)
        for index, shape in enumerate(inp.turns):
            await workflow.wait_condition(lambda: self.waiting > 0)
            self.waiting -= 1
            for step in shape.steps:
                if step == "local":
                    await workflow.execute_local_activity(noop, start_to_close_timeout=timeout)
                elif step == "reply":
                    await workflow.execute_activity(
                        turn_done, TurnDone(workflow.info().workflow_id, index), start_to_close_timeout=timeout
                    )
                else:
                    await workflow.execute_activity(noop, start_to_close_timeout=timeout)
        return len(inp.turns)


async def run_worker(address: str, task_queue: str) -> None:
    # Register the classes of the importable module, not of __main__: the workflow sandbox
    # re-imports a workflow's module by name.
    import temporal_floor as floor
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[floor.BenchFloorWorkflow],
        activities=[floor.noop, floor.turn_done],
        # The limits of `crm-fte worker`.
        max_concurrent_activities=100,
        max_concurrent_workflow_tasks=100,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(run_worker(args.address, args.task_queue))


if __name__ == "__main__":
    main()
