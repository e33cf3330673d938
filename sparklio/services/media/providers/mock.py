"""The mock media provider: real PNGs at once, deterministic, visibly made from the request."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import re
import textwrap
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse, Progress

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_COLOUR_WORDS = {
    "red": (220, 60, 60),
    "green": (70, 150, 90),
    "blue": (60, 110, 210),
    "yellow": (240, 200, 60),
    "orange": (240, 140, 50),
    "purple": (130, 80, 180),
    "pink": (235, 130, 170),
    "black": (30, 30, 35),
    "white": (245, 245, 240),
    "gold": (212, 175, 55),
    "teal": (40, 140, 140),
    "brown": (130, 90, 60),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "beige": (225, 210, 180),
    "navy": (30, 45, 90),
}


def _palette(prompt: str, options: dict[str, Any], rng: random.Random) -> list[tuple[int, ...]]:
    """The brand palette when given, else colours named in the prompt, else from its hash."""
    colours = []
    for value in options.get("palette") or []:
        match = _HEX.match(str(value))
        if match:
            colours.append(tuple(bytes.fromhex(match.group(1))))
    if not colours:
        colours = [
            _COLOUR_WORDS[w] for w in re.findall(r"[a-z]+", prompt.lower()) if w in _COLOUR_WORDS
        ]
    while len(colours) < 3:
        colours.append(tuple(rng.randrange(40, 230) for _ in range(3)))
    return colours


def render(prompt: str, width: int, height: int, seed: int, options: dict[str, Any]) -> bytes:
    """One PNG: a gradient of the palette, a few shapes, and the prompt written on it."""
    rng = random.Random(seed)
    colours = _palette(prompt, options, rng)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), colours[1]),
        Image.new("RGB", (width, height), colours[0]),
        gradient,
    )
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(4, min(width, height) // 12), max(5, min(width, height) // 4))
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=colours[2 + rng.randrange(len(colours) - 2)]
        )
    size = max(10, min(width, height) // 18)
    font = ImageFont.load_default(size=size)
    label = f"mock image - {width}x{height} - seed {seed}"
    # Pillow's own font has Latin glyphs only: other scripts (Hangul...) would draw as boxes,
    # so such a prompt is shown by its label alone
    caption = prompt if all(ord(ch) < 0x250 for ch in prompt) else ""
    lines = textwrap.wrap(caption, width=max(8, int(width / (size * 0.6))))[:5]
    text = "\n".join([*lines, label])
    margin = max(4, size // 2)
    box = draw.multiline_textbbox((margin, margin), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(255, 255, 255))
    draw.multiline_text((margin, margin), text, fill=(20, 20, 20), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: these are previews
    return buffer.getvalue()


class MockImageProvider(MediaProvider):
    """Images without a GPU: the same request always gives the same image."""

    @property
    def vendor(self) -> str:
        return "mock"

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        options: dict[str, Any],
        progress: Progress,
    ) -> MediaProviderResponse:
        width, height = int(options["width"]), int(options["height"])
        count = int(options.get("count", 1))
        key = f"{role}|{task}|{prompt}|{options.get('negative_prompt')}|{width}x{height}"
        base_seed = options.get("seed")
        if base_seed is None:
            base_seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:6], "big")
        outputs = []
        for index in range(count):
            data = await asyncio.to_thread(
                render, prompt, width, height, base_seed + index, options
            )
            outputs.append(await self.assets.save(data))
            progress((index + 1) / count, f"image {index + 1} of {count}")
        return MediaProviderResponse(
            provider=self.name,
            model=str(options.get("model", "mock")),
            outputs=outputs,
            usage={"images": count},
            meta={"mock": True, "seed": base_seed},
        )
