"""The login check of SecureTranscribe's Airflow UI views (metrics page, Transcripts view): one for both.

An authenticated Airflow user, as for the core API: an ``Authorization: Bearer`` token, else the UI's session
cookie, checked by the configured auth manager. The user's name is kept in ``request.state.airflow_user``
(the Transcripts view records who renamed a speaker). Icons (``…/icon.svg``) are served without a login.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response


def token_of(request: Request) -> str | None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)


async def require_airflow_user(request: Request) -> None:
    """401 without a valid Airflow login; the user is kept in ``request.state``."""
    if request.url.path.endswith("/icon.svg"):
        return
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    token = token_of(request)
    if not token:
        raise HTTPException(status_code=401, detail="Not authenticated: log in to Airflow first")
    user = await resolve_user_from_token(token)
    request.state.airflow_user = user.get_name()
    request.state.airflow_user_object = user


def serve_icon(app: FastAPI, svg: str) -> None:
    """``GET /icon.svg`` of a view's app (no login: the navigation shows it before any page)."""

    @app.get("/icon.svg", include_in_schema=False)
    def icon() -> Response:
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def nav_view(name: str, url_prefix: str, url_route: str) -> dict[str, Any]:
    """An external view in the UI's left navigation for an app mounted at ``url_prefix``."""
    return {
        "name": name,
        "href": url_prefix.lstrip("/") + "/",  # relative: works under a base URL sub-path too
        "url_route": url_route,
        "destination": "nav",
        "nav_top_level": True,
        "icon": url_prefix.lstrip("/") + "/icon.svg",
    }
