"""Bearer-token auth for the control plane.

The token comes from `MGPO_API_TOKEN`, or from the file named by `MGPO_API_TOKEN_FILE` (a mounted Secret; read
on every request, so a rotated Secret takes effect without a restart). With neither set, every mutation is
refused (403): the service never runs open. Tokens are compared in constant time.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="MGPO_API_TOKEN")


def configured_token() -> str | None:
    token = os.environ.get("MGPO_API_TOKEN")
    if token:
        return token
    path = os.environ.get("MGPO_API_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None
    return None


def check(credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = configured_token()
    if expected is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "no API token is configured on the server (set MGPO_API_TOKEN or MGPO_API_TOKEN_FILE): "
            "requests that need one are refused",
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    check(credentials)
