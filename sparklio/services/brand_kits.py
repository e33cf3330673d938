"""Brand kits, kept per user or shared with everyone (`brand_kits` table).

Who may do what:
- anyone reads their own kits and the shared ones;
- a member changes only their own; a shared kit is read-only to them (403), and another
  member's kit does not exist for them (404, the same answer as for an unknown id);
- an admin shares kits (`shared=True`), changes shared ones, and may read or change anyone's.

```python
store = BrandKitStore(sessions)
kit = await store.get(kit_id, user_id=principal.user_id, admin=False)
campaign = await run_campaign(llm, media, text, brand_kit=kit.kit)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from sparklio.db.models import BrandKitRow
from sparklio.exceptions import ForbiddenError, InvalidRequestError, NotFoundError
from sparklio.wire.brand import BrandKit

_ID = re.compile(r"^[0-9a-f]{32}$")
_FIELDS = ("name", "voice", "words_to_use", "words_to_avoid", "claims_to_avoid", "palette",
           "typography", "example_copy")  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


@dataclass(frozen=True, slots=True)
class StoredBrandKit:
    """A kit as kept: its id, owner (None: shared) and times."""

    id: str
    owner: str | None
    kit: BrandKit
    created_at: datetime
    updated_at: datetime

    @property
    def shared(self) -> bool:
        return self.owner is None

    @classmethod
    def of(cls, row: BrandKitRow) -> StoredBrandKit:
        kit = BrandKit.model_validate({f: getattr(row, f) for f in _FIELDS})
        return cls(row.id, row.user_id, kit, _utc(row.created_at), _utc(row.updated_at))


def check_id(kit_id: str) -> str:
    """`kit_id` when it looks like a kit's id; InvalidRequestError (422) naming it otherwise."""
    if not _ID.match(kit_id):
        raise InvalidRequestError(
            "kit_id: a brand kit's id is 32 lowercase hex characters, from GET "
            f"/api/v1/brand-kits (got {kit_id[:40]!r})",
            details=[{"field": "kit_id", "problem": "not 32 lowercase hex characters"}],
        )
    return kit_id


class BrandKitStore:
    """Create, list, read, replace and delete brand kits, with their owners' rights."""

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

    async def create(
        self, kit: BrandKit, *, user_id: str, admin: bool, shared: bool
    ) -> StoredBrandKit:
        if shared and not admin:
            raise ForbiddenError("Only an admin can share a brand kit with everyone (shared: true)")
        moment = datetime.now(UTC)
        row = BrandKitRow(user_id=None if shared else user_id, created_at=moment,
                          updated_at=moment, **kit.model_dump())  # fmt: skip
        async with self._sessions() as session, session.begin():
            session.add(row)
        return StoredBrandKit.of(row)

    async def list(self, *, user_id: str) -> list[StoredBrandKit]:
        """The caller's kits and the shared ones, by name."""
        query = (
            select(BrandKitRow)
            .where(or_(BrandKitRow.user_id == user_id, BrandKitRow.user_id.is_(None)))
            .order_by(BrandKitRow.name, BrandKitRow.created_at, BrandKitRow.id)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return [StoredBrandKit.of(row) for row in rows]

    async def get(self, kit_id: str, *, user_id: str, admin: bool) -> StoredBrandKit:
        """A kit the caller may read; NotFoundError otherwise."""
        async with self._sessions() as session:
            row = await self._readable(session, kit_id, user_id, admin)
            return StoredBrandKit.of(row)

    async def replace(
        self, kit_id: str, kit: BrandKit, *, user_id: str, admin: bool, shared: bool | None = None
    ) -> StoredBrandKit:
        """Replace a kit the caller may change with `kit`; `shared` (admins only) moves it to
        everyone (True) or to the caller (False); None leaves it where it is."""
        async with self._sessions() as session, session.begin():
            row = await self._writable(session, kit_id, user_id, admin)
            if shared is not None and shared != (row.user_id is None):
                if not admin:
                    raise ForbiddenError("Only an admin can share or unshare a brand kit")
                row.user_id = None if shared else user_id
            for field, value in kit.model_dump().items():
                setattr(row, field, value)
            row.updated_at = datetime.now(UTC)
        return StoredBrandKit.of(row)

    async def delete(self, kit_id: str, *, user_id: str, admin: bool) -> None:
        async with self._sessions() as session, session.begin():
            await session.delete(await self._writable(session, kit_id, user_id, admin))

    async def _readable(self, session: Any, kit_id: str, user_id: str, admin: bool) -> BrandKitRow:
        row: BrandKitRow | None = await session.get(BrandKitRow, check_id(kit_id))
        if row is None or not (admin or row.user_id in (None, user_id)):
            raise NotFoundError(f"No brand kit {kit_id} (or not yours).")
        return row

    async def _writable(self, session: Any, kit_id: str, user_id: str, admin: bool) -> BrandKitRow:
        row = await self._readable(session, kit_id, user_id, admin)
        if row.user_id is None and not admin:
            raise ForbiddenError(
                f"Brand kit {kit_id} is shared with everyone: only an admin can change it"
            )
        return row


__all__ = ["BrandKitStore", "StoredBrandKit", "check_id"]
