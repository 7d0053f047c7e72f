"""Every kind of cross-shard reference `messenger check references` audits: the one registry.

A feature that keeps references across shards adds its checks here (storage/audit/runner.py says
what a check is), in the order a report should show them.
"""

from __future__ import annotations

from messenger.storage.audit.claims import AccountClaimsCheck, ClaimsCheck
from messenger.storage.audit.follows import FollowCountsCheck, FollowersCheck, FollowsCheck
from messenger.storage.audit.messaging import MembershipsCheck, MessageSendersCheck
from messenger.storage.audit.runner import ReferenceCheck


def reference_checks() -> tuple[ReferenceCheck, ...]:
    return (
        FollowsCheck(),
        FollowersCheck(),
        FollowCountsCheck(),
        ClaimsCheck("username"),
        ClaimsCheck("email"),
        AccountClaimsCheck(),
        MembershipsCheck(),
        MessageSendersCheck(),
    )
