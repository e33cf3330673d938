"""Campaigns run through the API: stored per user, run as durable workflows (engine)."""
