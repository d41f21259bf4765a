"""The control plane's dependencies, as `Annotated` aliases: the process's ControlPlane, access checks, and
the run a path names (404 when there is none, 409 when it has ended and the request needs a live one)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from services import auth
from services.control.plane import ControlPlane
from services.control.schemas import NAME
from services.runs import ENDED, RunView


def _plane(request: Request) -> ControlPlane:
    return request.app.state.plane


Plane = Annotated[ControlPlane, Depends(_plane)]


def _read_access(
    plane: Plane, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)]
) -> None:
    if plane.settings.auth_reads:
        auth.check(credentials)


# route-level dependency lists: mutations always need the token; reads only with `auth_reads`
WRITE = [Depends(auth.require_token)]
READ = [Depends(_read_access)]


def _run_or_404(name: str, plane: Plane) -> RunView:
    view = plane.view(name) if re.match(NAME, name) else None
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run named {name!r}")
    return view


Run = Annotated[RunView, Depends(_run_or_404)]


def _live_or_409(view: Run) -> RunView:
    if view.status in ENDED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {view.name!r} is {view.status}: not running")
    return view


LiveRun = Annotated[RunView, Depends(_live_or_409)]
