"""Generated files, stored once under SPARKLIO_HOME/assets and named by their sha256."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from sparklio.core.files import write_private
from sparklio.exceptions import InvalidMediaError, InvalidRequestError, NotFoundError
from sparklio.wire.media import MediaAsset

ASSET_ID = re.compile(r"^[0-9a-f]{64}$")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
MIME_TYPES = {ext: mime for mime, ext in EXTENSIONS.items()}
DOWNLOAD_PATH = "/api/v1/media/assets/{id}"


class AssetStore:
    """Content-addressed files: the same bytes are stored once, whoever made them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, data: bytes) -> MediaAsset:
        """Store an image (PNG, JPEG, WebP or GIF) and describe it; off the event loop.
        InvalidMediaError (a ProviderError: the provider's output is at fault) for bytes that
        are not one."""
        return await asyncio.to_thread(self._save, data)

    def _save(self, data: bytes) -> MediaAsset:
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                mime = Image.MIME.get(image.format or "", "")
        except OSError as exc:
            raise InvalidMediaError(f"not an image: {exc}") from None
        if mime not in EXTENSIONS:
            raise InvalidMediaError(
                f"unsupported image type {mime or 'unknown'} (PNG, JPEG, WebP or GIF are kept)"
            )
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / f"{digest}.{EXTENSIONS[mime]}"
        if not path.exists():
            write_private(path, data)  # atomic: a reader never sees half a file
        return MediaAsset(
            id=digest,
            mime_type=mime,
            width=width,
            height=height,
            size_bytes=len(data),
            sha256=digest,
            url=DOWNLOAD_PATH.format(id=digest),
        )

    def find(self, asset_id: str) -> tuple[Path, str]:
        """The file and mime type of an asset; 422 for a malformed id, 404 for a missing one."""
        if not ASSET_ID.match(asset_id):
            raise InvalidRequestError(
                f"asset id {asset_id!r} is not a sha256 (64 lowercase hex characters); use the "
                "id from a job's assets."
            )
        for path in self.root.glob(f"{asset_id}.*"):
            mime = MIME_TYPES.get(path.suffix.lstrip("."))
            if mime is not None:
                return path, mime
        raise NotFoundError(f"No asset {asset_id}: it was never stored here, or was removed.")


__all__ = ["ASSET_ID", "DOWNLOAD_PATH", "EXTENSIONS", "MIME_TYPES", "AssetStore", "MediaAsset"]
