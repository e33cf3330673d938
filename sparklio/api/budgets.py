"""The caller's limits and budgets (sparklio.services.budgets), for the endpoints that call
models: `AccountDep` is None when the gateway has no budgets (a bare test app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from sparklio.api.auth import PrincipalDep
from sparklio.api.deps import GatewayDep
from sparklio.services.budgets import Account


async def caller_account(principal: PrincipalDep, gateway: GatewayDep) -> Account | None:
    """The limits of the caller's key and user (read at most every few seconds)."""
    if gateway.budgets is None:
        return None
    return await gateway.budgets.account(principal.user_id, principal.key_id)


AccountDep = Annotated[Account | None, Depends(caller_account)]
