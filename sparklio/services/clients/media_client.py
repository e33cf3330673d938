"""MediaGatewayClient: how agents get images. Like LLMGatewayClient, the only way.

```python
async with MediaGatewayClient() as media:
    job = await media.generate_image(role="vision_generator", task="image",
                                     prompt="A cup of green tea", width=768, height=512)
    png = await media.download(job.assets[0].id)
```

`generate_image` submits the job and follows it to the end (reporting progress to an optional
callback); a job that fails or is cancelled raises the matching gateway error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sparklio.exceptions import GatewayError, ProviderError, UpstreamTimeoutError
from sparklio.services.clients.base import GatewayHTTPClient
from sparklio.wire.media import MediaJob

#: Called with the job each time its progress or status changes.
ProgressCallback = Callable[[MediaJob], Awaitable[None] | None]

#: How long one request waits server-side before the client looks again.
POLL_WAIT = 5.0


class MediaGatewayClient(GatewayHTTPClient):
    """Client for the Media Gateway's HTTP API."""

    async def submit(
        self,
        *,
        role: str,
        task: str,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        count: int = 1,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        wait: float = 0,
    ) -> MediaJob:
        """Start an image job and return it as it stands (after up to `wait` seconds)."""
        body: dict[str, Any] = {"role": role, "task": task, "prompt": prompt, "count": count}
        extras = {"negative_prompt": negative_prompt, "width": width, "height": height,
                  "seed": seed, "options": options}  # fmt: skip
        body.update({k: v for k, v in extras.items() if v is not None})
        data = await self._request("POST", "/api/v1/media/generate", body,
                                   params={"wait": wait} if wait else None)  # fmt: skip
        return self._model(MediaJob, data, "POST /api/v1/media/generate")

    async def job(self, job_id: str) -> MediaJob:
        """A job as it stands."""
        data = await self._request("GET", f"/api/v1/media/jobs/{job_id}")
        return self._model(MediaJob, data, f"GET /api/v1/media/jobs/{job_id}")

    async def cancel(self, job_id: str) -> MediaJob:
        """Cancel a job; the work stops on the provider's server too."""
        data = await self._request("DELETE", f"/api/v1/media/jobs/{job_id}")
        return self._model(MediaJob, data, f"DELETE /api/v1/media/jobs/{job_id}")

    async def download(self, asset_id: str) -> bytes:
        """A generated file's bytes."""
        return await self._request_bytes("GET", f"/api/v1/media/assets/{asset_id}")

    async def generate_image(
        self,
        *,
        role: str,
        task: str,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        count: int = 1,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # at the limit the job is cancelled too
    ) -> MediaJob:
        """Submit a job and follow it until it finishes; returns it with its assets.

        Raises ProviderError when the job failed, GatewayError when it was cancelled, and
        UpstreamTimeoutError after `timeout` seconds (the job is cancelled then).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.submit(role=role, task=task, prompt=prompt,
                                negative_prompt=negative_prompt, width=width, height=height,
                                count=count, seed=seed, options=options,
                                wait=min(POLL_WAIT, timeout or POLL_WAIT))  # fmt: skip
        seen = (job.status, job.progress)
        await _report(progress, job)
        while not job.finished:
            if deadline is not None and time.monotonic() >= deadline:
                await self.cancel(job.job_id)
                raise UpstreamTimeoutError(
                    f"Image job {job.job_id} did not finish within {timeout:g} s; it was cancelled."
                )
            await asyncio.sleep(0.2 if job.status == "running" else 0.5)
            job = await self.job(job.job_id)
            if (job.status, job.progress) != seen:
                seen = (job.status, job.progress)
                await _report(progress, job)
        if job.status == "failed":
            error = job.error or {}
            raise ProviderError(
                f"Image job {job.job_id} failed: {error.get('message', 'no reason given')}",
                provider=job.provider,
                model=job.model,
                outcome=str(error.get("type", "error")),
                details={"job": job.model_dump(mode="json")},
            )
        if job.status == "cancelled":
            raise GatewayError(f"Image job {job.job_id} was cancelled.", status=409)
        return job


async def _report(progress: ProgressCallback | None, job: MediaJob) -> None:
    if progress is not None:
        result = progress(job)
        if result is not None:
            await result
