"""The login check of SecureTranscribe's Airflow UI views (metrics page, Transcripts view): one for both.

An authenticated Airflow user, as for the core API: an ``Authorization: Bearer`` token, else the UI's session
cookie, checked by the configured auth manager. The user's name is kept in ``request.state.airflow_user``
(the Transcripts view records who renamed a speaker). Icons (``…/icon.svg``) are served without a login.
"""

from __future__ import annotations

from fastapi import HTTPException, Request


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
