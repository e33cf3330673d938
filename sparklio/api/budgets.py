"""The caller's limits and budgets (sparklio.services.budgets), for the endpoints that call
models and the auth endpoints that show and set them. Both are None in an app that keeps no
budgets (a small test app holding only some services)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sparklio.api.auth import PrincipalDep
from sparklio.api.deps import services_of
from sparklio.services.budgets import Account, Budgets


async def get_budgets(request: Request) -> Budgets | None:
    """The gateway's budgets; None when the app has none."""
    try:
        return services_of(request.app).gateway.budgets
    except AttributeError:  # an app that holds only some services (tests of auth alone)
        return None


BudgetsDep = Annotated[Budgets | None, Depends(get_budgets)]


async def caller_account(principal: PrincipalDep, budgets: BudgetsDep) -> Account | None:
    """The limits of the caller's key and user (read at most every few seconds)."""
    if budgets is None:
        return None
    return await budgets.account(principal.user_id, principal.key_id)


AccountDep = Annotated[Account | None, Depends(caller_account)]
