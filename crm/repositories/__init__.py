"""Repositories: all of the CRM's SQL, one module per aggregate.

Conventions (every module follows them):
- Module-level `async def` functions taking an `AsyncSession` first and keyword-only arguments.
- A repository never commits, flushes a transaction or opens a session: the caller (an activity,
  a request handler, a CLI command) owns the transaction, usually `crm.db.transaction(sessions)`.
- Results are small typed values (frozen dataclasses, pydantic models, primitives), never Rows.
- SQLAlchemy Core over the models in `crm.models` where it reads clearer; `text()` where the SQL
  reads better (upserts with partial-index conflict targets, LATERAL joins, window functions).
"""
