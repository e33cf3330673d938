"""The campaigns API from Python: start a campaign, follow its events, read its report.

```python
async with CampaignGatewayClient() as campaigns:
    started = await campaigns.start({"brief": "Launch our oat latte in Seoul"})
    async for event in campaigns.events(started["id"]):
        print(event["type"], event["step"])
    report = await campaigns.report(started["id"])
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sparklio.exceptions import GatewayResponseError
from sparklio.services.clients.base import GatewayHTTPClient
from sparklio.services.clients.llm_client import server_sent_events

#: The events after which a campaign's stream ends.
LAST_EVENTS = ("done", "failed", "cancelled")


class CampaignGatewayClient(GatewayHTTPClient):
    """POST /api/v1/campaigns and what follows it."""

    async def start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a campaign (a CampaignRequest's fields); its id, status and links."""
        answer: dict[str, Any] = await self._request("POST", "/api/v1/campaigns", body)
        return answer

    async def get(self, campaign_id: str) -> dict[str, Any]:
        """The campaign: status, steps so far, result or error."""
        answer: dict[str, Any] = await self._request("GET", f"/api/v1/campaigns/{campaign_id}")
        return answer

    async def cancel(self, campaign_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request(
            "POST", f"/api/v1/campaigns/{campaign_id}/cancel"
        )
        return answer

    async def events(
        self, campaign_id: str, after: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The campaign's events as they happen ({id, type, step, data, at}), from the first
        or after event `after`, until `done`, `failed` or `cancelled`. A stream that ends
        before one of those raises GatewayResponseError (follow on with `after`)."""
        headers = {} if after is None else {"Last-Event-ID": str(after)}
        path = f"/api/v1/campaigns/{campaign_id}/events"
        async with self._streaming("GET", path, headers=headers) as response:
            async for name, data in server_sent_events(response.aiter_lines()):
                if not isinstance(data, dict) or data.get("type") != name:
                    raise GatewayResponseError(
                        f"The gateway at {self.base_url} sent an event that is not a "
                        f"campaign's: {name!r}; is it a Sparklio gateway of this version?"
                    )
                yield data
                if name in LAST_EVENTS:
                    return
        raise GatewayResponseError(
            f"The gateway at {self.base_url} ended campaign {campaign_id}'s events before it "
            "finished."
        )

    async def report(self, campaign_id: str) -> dict[str, Any]:
        """The finished campaign's report data (report.json)."""
        answer: dict[str, Any] = await self._request(
            "GET", f"/api/v1/campaigns/{campaign_id}/report.json"
        )
        return answer

    async def report_text(self, campaign_id: str, kind: str) -> str:
        """The report as markdown (`md`) or a page (`html`), rendered by the server without
        the images."""
        data = await self._request_bytes("GET", f"/api/v1/campaigns/{campaign_id}/report.{kind}")
        return data.decode("utf-8")
