"""What routes depend on: the runtime, per-app state (caches, limiter, in-flight keys) and the three callers.

The security schemes are declared with FastAPI's ``HTTPBearer`` so ``/docs`` shows them and lets a reader try
the API; the checks themselves are ``tidings.auth``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tidings import auth
from tidings.api.idempotency import InFlight
from tidings.api.limits import RateLimiter
from tidings.api.shared_limits import SharedRateLimiter, open_limiter
from tidings.core.models import App
from tidings.errors import AuthError
from tidings.runtime import Runtime

_producer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="The app's API key (producers)."
)
_user_scheme = HTTPBearer(
    auto_error=False, scheme_name="UserToken", bearerFormat="JWT", description="A user JWT signed by the app."
)
_admin_scheme = HTTPBearer(auto_error=False, scheme_name="AdminToken", description="$TIDINGS_ADMIN_TOKEN")

Credentials = HTTPAuthorizationCredentials | None


@dataclass
class ApiState:
    """Process-local state of one API app (nothing here must survive a restart)."""

    runtime: Runtime
    apps: auth.AppCache
    limiter: RateLimiter | SharedRateLimiter
    in_flight: InFlight

    @classmethod
    def build(cls, runtime: Runtime) -> ApiState:
        settings = runtime.settings
        return cls(
            runtime=runtime,
            apps=auth.AppCache(runtime.clock),
            limiter=open_limiter(
                runtime.clock, settings.rate_per_key, settings.rate_burst, settings.rate_limit_storage
            ),
            in_flight=InFlight(),
        )


async def api_state(request: Request) -> ApiState:
    """Async although it awaits nothing: FastAPI runs a plain ``def`` dependency on its thread pool, a
    thread hop (two context switches and a future) on every request for a dict lookup."""
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]


def _credential(credentials: Credentials) -> str:
    if credentials is None:
        raise AuthError("missing Authorization: Bearer header")
    return credentials.credentials


async def producer(state: State, credentials: Annotated[Credentials, Security(_producer_scheme)]) -> App:
    return await auth.authenticate_producer(state.runtime, _credential(credentials), state.apps)


async def user(state: State, credentials: Annotated[Credentials, Security(_user_scheme)]) -> tuple[App, str]:
    return await auth.authenticate_user(state.runtime, _credential(credentials), state.apps)


async def admin(request: Request, state: State, _: Annotated[Credentials, Security(_admin_scheme)]) -> None:
    auth.check_admin(state.runtime.settings.admin_token, request.headers.get("authorization"))


Producer = Annotated[App, Depends(producer)]
User = Annotated[tuple[App, str], Depends(user)]
Admin = Depends(admin)
