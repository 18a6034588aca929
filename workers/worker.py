"""`crm-fte worker`: the Temporal worker hosting the conversation workflow and its activities."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from core.logging import get_logger
from core.observability import configure_tracing
from core.process import tune_gc
from core.settings import Settings
from core.temporal import connect_temporal
from workers.health_server import serve_health
from workers.metrics import MetricsInterceptor
from workers.process import install_stop_event, retry_forever
from workers.registry import build_activities, close_activities, workflow_classes, workflow_runner
from workers.schedules import ensure_daily_report_schedule, ensure_gmail_watch_schedule
from workers.temporal_setup import ensure_search_attributes

log = get_logger(__name__)
MAX_CONCURRENT_ACTIVITIES = 100
# Blocking provider calls in flight at once (threads of the default executor).
MAX_BLOCKING_CALLS = 32


async def run_worker(settings: Settings) -> None:
    """Connect (retrying), register search attributes, poll until SIGTERM, then drain."""
    configure_tracing(settings, "crm-fte-worker")
    stop = install_stop_event()
    state: dict[str, object] = {"connected": False, "polling": False}

    def ready() -> tuple[bool, dict[str, object]]:
        return bool(state["polling"]), {"temporal_connected": state["connected"]}

    health_task = (
        asyncio.create_task(serve_health(settings.worker_health_port, ready, host=settings.health_host))
        if settings.worker_health_port
        else None
    )

    async def connect() -> Client:
        return await connect_temporal(settings, identity=None)

    client = await retry_forever("worker.temporal_connect", connect, stop)
    if client is None:
        return
    state["connected"] = True
    try:
        added = await ensure_search_attributes(client)
        if added:
            log.info("worker.search_attributes_registered", names=added)
    except Exception as exc:  # e.g. Temporal Cloud, where an operator registers them
        log.warning("worker.search_attributes_unavailable", error=str(exc)[:200])

    if settings.gmail_configured and settings.gmail_watch_topic:
        try:
            schedule_id = await ensure_gmail_watch_schedule(client, settings)
            log.info(
                "worker.gmail_watch_scheduled", schedule_id=schedule_id, every_hours=settings.gmail_watch_renew_hours
            )
        except Exception as exc:  # the worker still serves conversations; the schedule is retried next start
            log.warning("worker.gmail_watch_schedule_failed", error=str(exc)[:200])
    try:
        schedule_id = await ensure_daily_report_schedule(client, settings)
        log.info("worker.daily_report_scheduled", schedule_id=schedule_id, at_utc=settings.daily_report_time_utc)
    except Exception as exc:  # as above: conversations first; the schedule is retried next start
        log.warning("worker.daily_report_schedule_failed", error=str(exc)[:200])

    # Provider SDKs without asyncio support (Twilio, Gmail) and the embedding model run in the loop's
    # default executor; its default size (CPUs + 4: six threads on two cores) would queue sends
    # behind each other well below the 100 activities this worker runs at once, their queueing time
    # counted against each send's start-to-close timeout.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=MAX_BLOCKING_CALLS, thread_name_prefix="crm-fte-blocking")
    )
    activities, resources = await build_activities(settings)
    if settings.guardrails_semantic_enabled:
        # Trained once per process (about 30 s of CPU over ~4,200 labelled messages, or read in well under
        # a second from the cache an earlier process left): before polling, not inside the first
        # customer's guardrail step.
        from activities.guardrails.learned import learned_layer

        started = time.perf_counter()
        await asyncio.to_thread(learned_layer)
        log.info("worker.guardrails_layer_ready", seconds=round(time.perf_counter() - started, 2))
    # The question bank and the sections' texts (the offline responder's evidence, and the order of
    # the model's search hits) are embedded once (about 6,200 short questions and 450 sections, seconds
    # of CPU, or milliseconds from the vector cache) and the section classifier trained on them (about
    # 6 s the first time, then loaded from the same cache) before polling, not inside the first
    # customer's turn; the section ranker is read then too (a malformed file stops the worker here).
    from activities.agent.offline import bundled_matcher, small_talk_bank
    from activities.agent.ranking import section_ranker

    started = time.perf_counter()
    await asyncio.to_thread(bundled_matcher().warm)
    await asyncio.to_thread(small_talk_bank().warm)
    section_ranker()
    log.info("worker.question_bank_ready", seconds=round(time.perf_counter() - started, 2))
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=workflow_classes(),
        workflow_runner=workflow_runner(),
        activities=activities,
        graceful_shutdown_timeout=timedelta(seconds=20),
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        interceptors=[MetricsInterceptor()],
        max_concurrent_workflow_tasks=100,
    )
    # Start-up is done: what it built lives as long as the process (see core.process.tune_gc).
    tune_gc()
    run = asyncio.create_task(worker.run())
    state["polling"] = True
    log.info("worker.started", task_queue=settings.temporal_task_queue, namespace=settings.temporal_namespace)
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
    state["polling"] = False
    if run not in done:
        log.info("worker.draining")
        await worker.shutdown()
    stopped.cancel()
    try:
        await run
    finally:
        await close_activities(resources)
        if health_task is not None:
            health_task.cancel()
            await asyncio.gather(health_task, return_exceptions=True)
        log.info("worker.stopped")
