"""What the routes need of the process, as one typed object, and the accessor that finds it.

`messenger.bootstrap` builds an `ApiContext` when the app starts (lifespan) and hands it to
`api.app.build_app`, which keeps it on the app; routes read it with `context(request)`. The API
thus sees services, never the stores, pools or router behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from messenger.metrics import Metrics
from messenger.services.accounts import AccountService
from messenger.services.cluster import ClusterOverview
from messenger.services.follows import FollowService
from messenger.services.live import LiveHub
from messenger.services.messaging import MessagingService
from messenger.services.ops import OpsService
from messenger.services.tokens import TokenSigner
from messenger.services.users import UserService
from messenger.settings import Settings


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    metrics: Metrics
    users: UserService
    follows: FollowService
    accounts: AccountService
    messaging: MessagingService
    hub: LiveHub
    tokens: TokenSigner
    ops: OpsService
    cluster: ClusterOverview


def context(connection: HTTPConnection) -> ApiContext:
    """The context of the app serving this request or WebSocket (set by its lifespan)."""
    found: ApiContext = connection.app.state.context
    return found
