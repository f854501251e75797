"""What image input a server accepts (server/media/policy.py), read from the settings."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.media import MediaPolicy


def test_policy_from_settings() -> None:
    settings = Settings(
        allow_remote_images=True,
        remote_image_domains=["*.Images.Example.", "bücher.de"],
        max_image_bytes=2048,
    )
    pol = MediaPolicy.from_settings(settings)
    assert pol.remote_image_domains == ("images.example", "xn--bcher-kva.de")
    assert pol.max_image_bytes == 2048
    with pytest.raises(ValueError, match="remote_image_domains"):
        Settings(allow_remote_images=True, remote_image_domains=[])
