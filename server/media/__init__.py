"""Untrusted image input → validated RGB pixels at the size the model can use.

`ImageLoader.load` is the entry point; the modules behind it are the policy (limits and refusals),
remote fetching (SSRF-safe), decoding to need, and the process-wide pixel budget.
"""

from server.media.budget import PixelBudget, default_pixel_budget
from server.media.decode import Need, long_side, tile_canvas
from server.media.loader import ImageLoader, LoadedImage
from server.media.policy import MediaPolicy

__all__ = [
    "ImageLoader",
    "LoadedImage",
    "MediaPolicy",
    "Need",
    "PixelBudget",
    "default_pixel_budget",
    "long_side",
    "tile_canvas",
]
