"""The control plane (`mgpo serve`): a FastAPI app over the run registry in Redis.

It owns no training state: runs live in Redis (services.runs, runtime.run_state, the streams) and in their
driver processes, so a restarted control plane re-attaches to whatever is running. Mutations need the bearer
token (services.auth); reads need it only with `auth_reads`. Bad input is a 4xx with a JSON `detail`.

- `app.py`: create_app, which wires the routers, the body limit and the Redis-down handler;
- `plane.py`: what the process holds (Redis client, registry, autoscaler, drivers) and the service functions;
- `deps.py`: the dependencies (`Plane`, `Run`, `LiveRun`, `READ`, `WRITE`);
- `schemas.py`: request and response bodies; `routes/`: one router per resource.
"""

from services.control.app import create_app

__all__ = ["create_app"]
