"""Audit checks of the username/email claims: every claim held by an account, every account's
values claimed. Repairs follow the claims protocol (storage/claims.py): the account is the truth."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from messenger.domain.ids import new_id
from messenger.storage.audit.runner import SCAN_BATCH, Batch, Finding
from messenger.storage.claims import KINDS, SQL, Claim, ClaimKind, ClaimStore, release_for_user
from messenger.storage.shards.transactions import ShardTransactions


def _scan_claims(kind: ClaimKind) -> str:
    # Pending claims that have not expired belong to registrations under way: not judged.
    return f"""
        SELECT {kind}, user_id, reservation_id, state FROM {kind}_claims
        WHERE {kind} > %(a)s AND (state = 'confirmed' OR expires_at < now())
        ORDER BY {kind} LIMIT %(batch)s"""


def _accounts_holding(kind: ClaimKind) -> str:
    return f"""
        SELECT t.value, a.user_id IS NOT NULL
        FROM unnest(%(value)s::text[], %(user)s::uuid[]) AS t(value, user_id)
        LEFT JOIN accounts a ON a.user_id = t.user_id AND a.{kind} = t.value"""


def _claims_of(kind: ClaimKind) -> str:
    return f"""
        SELECT t.value, t.user_id, c.user_id
        FROM unnest(%(value)s::text[], %(user)s::uuid[]) AS t(value, user_id)
        LEFT JOIN {kind}_claims c ON c.{kind} = t.value"""


CLAIMS_OF = {kind: _claims_of(kind) for kind in KINDS}
SCAN_ACCOUNTS = """
SELECT user_id, username, email FROM accounts WHERE user_id > %(a)s ORDER BY user_id LIMIT %(batch)s
"""
INSERT_CONFIRMED = {
    kind: f"""INSERT INTO {kind}_claims ({kind}, user_id, reservation_id, state)
              VALUES (%s, %s, %s, 'confirmed') ON CONFLICT ({kind}) DO NOTHING RETURNING 1"""
    for kind in KINDS
}


class ClaimsCheck:
    """Claims (on the value's shard) vs the accounts they claim for (on the user's shard)."""

    def __init__(self, kind: ClaimKind) -> None:
        self.claim_kind: ClaimKind = kind
        self.kind = f"{kind}_claims"
        self.description = f"{kind} claims vs the accounts holding them"
        self._scan = _scan_claims(kind)
        self._holding = _accounts_holding(kind)

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = ""
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(self._scan, {"a": last, "batch": SCAN_BATCH})
                rows = await cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            findings = [
                Finding("abandoned", self._ref(value, user_id, reservation), "pending past its expiry")
                for value, user_id, reservation, state in rows if state == "pending"
            ]
            confirmed = [r for r in rows if r[3] == "confirmed"]
            by_shard: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
            for row in confirmed:
                by_shard[shards.shard_for(row[1])].append(row)
            for target, group in by_shard.items():
                reservations = {value: (user_id, reservation) for value, user_id, reservation, _ in group}
                async with shards.transaction(target, name=f"audit_{self.kind}_targets") as conn:
                    cursor = await conn.execute(
                        self._holding, {"value": [r[0] for r in group], "user": [r[1] for r in group]}
                    )
                    for value, held in await cursor.fetchall():
                        if not held:
                            findings.append(Finding("dangling", self._ref(value, *reservations[value]),
                                                    "no account of this user holds the value"))
            yield Batch(len(rows), findings)

    def _ref(self, value: str, user_id: uuid.UUID, reservation: uuid.UUID) -> dict[str, str]:
        return {self.claim_kind: value, "user_id": str(user_id), "reservation_id": str(reservation)}

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        value, user_id = finding.ref[self.claim_kind], uuid.UUID(finding.ref["user_id"])
        claim = Claim(self.claim_kind, value, user_id, uuid.UUID(finding.ref["reservation_id"]))
        if finding.problem == "abandoned":
            await ClaimStore(shards).resolve(claim)
            return True
        # Confirmed but unheld: free it, unless the account holds the value again by now.
        async with shards.transaction_for(user_id, name=f"audit_{self.kind}_account_holds") as conn:
            cursor = await conn.execute(SQL[self.claim_kind].account_holds, (user_id, value))
            if await cursor.fetchone() is not None:
                return True
        async with shards.transaction_for(value, name=f"audit_{self.kind}_repair") as conn:
            await release_for_user(conn, self.claim_kind, value, user_id)
        return True


class AccountClaimsCheck:
    """Accounts (on the user's shard) vs the claims that keep their values unique."""

    kind = "account_claims"
    description = "accounts' usernames and emails vs their claims"

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = uuid.UUID(int=0)
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(SCAN_ACCOUNTS, {"a": last, "batch": SCAN_BATCH})
                rows = await cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            findings: list[Finding] = []
            for index, kind in enumerate(KINDS, start=1):
                by_shard: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
                for row in rows:
                    by_shard[shards.shard_for(row[index])].append((row[index], row[0]))
                for target, group in by_shard.items():
                    async with shards.transaction(target, name=f"audit_{self.kind}_targets") as conn:
                        cursor = await conn.execute(
                            CLAIMS_OF[kind], {"value": [g[0] for g in group], "user": [g[1] for g in group]}
                        )
                        for value, user_id, holder in await cursor.fetchall():
                            ref = {"kind": kind, "value": value, "user_id": str(user_id)}
                            if holder is None:
                                findings.append(Finding("missing_twin", ref, "no claim protects the value"))
                            elif holder != user_id:
                                findings.append(Finding("disagrees", ref, f"claimed by user {holder}"))
            yield Batch(len(rows), findings)

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        if finding.problem != "missing_twin":
            return False  # two users hold one value: a person must decide which keeps it
        kind: ClaimKind = finding.ref["kind"]  # type: ignore[assignment]
        value, user_id = finding.ref["value"], uuid.UUID(finding.ref["user_id"])
        async with shards.transaction_for(value, name=f"audit_{self.kind}_repair") as conn:
            cursor = await conn.execute(INSERT_CONFIRMED[kind], (value, user_id, new_id()))
            return await cursor.fetchone() is not None
