"""Moved to `sparklio.wire.jsonvalues` (the clients check their bodies with it too); the server
keeps importing it from here."""

from sparklio.wire.jsonvalues import MAX_INT, MIN_INT, check_json_value, may_hold_nonfinite

__all__ = ["MAX_INT", "MIN_INT", "check_json_value", "may_hold_nonfinite"]
