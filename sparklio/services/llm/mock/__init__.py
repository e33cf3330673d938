"""The mock provider's schema walk: bounded, complete, and checked (see walk.py)."""

from sparklio.services.llm.mock.refs import SchemaTools
from sparklio.services.llm.mock.walk import FULL_NODES, INLINE_NODES, INLINE_SECONDS, OverBudget

__all__ = ["FULL_NODES", "INLINE_NODES", "INLINE_SECONDS", "OverBudget", "SchemaTools"]
