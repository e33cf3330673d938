"""MockOllama moved to tests/fakes/campaign.py (scripts/e2e.py uses it too); kept importable
from here for the tests that name this module."""

from tests.fakes.campaign import MockOllama

__all__ = ["MockOllama"]
