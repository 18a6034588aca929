"""The gateway's pages: the web support form, the ticket status page and the human-agent console.

Plain HTML, CSS and JavaScript written for this project (gateway/static), plus the vendored files
of gateway/static/vendor (its README names each one's package, version and licence), served with a
strict Content-Security-Policy: no inline script or style, nothing loaded from another origin.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, RedirectResponse

from core.errors import NotFound

STATIC_DIR = FilePath(__file__).parent / "static"
_MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# The same headers on every server-rendered customer page (the help centre's too).
SECURITY_HEADERS = _SECURITY_HEADERS

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    # Pages are small and change with each release: always revalidate (ETag / Last-Modified).
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/support")
async def support_form() -> FileResponse:
    """The web support form; after submission it shows the ticket and its live status."""
    return _page("support.html")


@router.get("/support/status")
async def ticket_status() -> FileResponse:
    """Look up a ticket by number and email, and follow its replies."""
    return _page("status.html")


@router.get("/agent")
async def agent_console() -> FileResponse:
    """The human-agent console (signs in with an API key)."""
    return _page("agent.html")


@router.get("/support/", response_class=RedirectResponse)
async def support_slash() -> RedirectResponse:
    return RedirectResponse("/support", status_code=308)


@router.get("/agent/", response_class=RedirectResponse)
async def agent_slash() -> RedirectResponse:
    return RedirectResponse("/agent", status_code=308)


# The vendored files served, by name: nothing else under static/vendor is reachable. Declared
# before /static/{kind}/{name}, whose pattern would answer 422 for `vendor`.
_VENDOR_FILES = {"chart.umd.min.js": "text/javascript; charset=utf-8"}


@router.get("/static/vendor/{name}")
async def vendor_asset(name: Annotated[str, Path(pattern=r"^[a-z0-9.-]+$", max_length=64)]) -> FileResponse:
    """A vendored third-party script (Chart.js for the console's dashboard), by its listed name only."""
    media_type = _VENDOR_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no asset vendor/{name}")
    return FileResponse(
        STATIC_DIR / "vendor" / name,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@router.get("/static/{kind}/{name}")
async def asset(
    kind: Annotated[str, Path(pattern=r"^(css|js)$")],
    name: Annotated[str, Path(pattern=r"^[a-z0-9-]+\.(css|js)$")],
) -> FileResponse:
    """A stylesheet or script of the pages above (names are checked, so no path escapes the folder)."""
    path = STATIC_DIR / kind / name
    if path.suffix != f".{kind}" or not path.is_file():
        raise NotFound(f"no asset {kind}/{name}")
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES[path.suffix],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
