"""Every kind of cross-shard reference `messenger check references` audits: the one registry.

A feature that keeps references across shards adds its checks here (storage/audit.py says
what a check is), in the order a report should show them.
"""

from __future__ import annotations

from messenger.storage.audit import ReferenceCheck
from messenger.storage.claim_audit import AccountClaimsCheck, ClaimsCheck
from messenger.storage.follow_audit import FollowCountsCheck, FollowersCheck, FollowsCheck


def reference_checks() -> tuple[ReferenceCheck, ...]:
    return (
        FollowsCheck(),
        FollowersCheck(),
        FollowCountsCheck(),
        ClaimsCheck("username"),
        ClaimsCheck("email"),
        AccountClaimsCheck(),
    )
