"""Keeping user text from posing as the model's control tokens.

InternVL's tokenizer turns `<img>`, `<IMG_CONTEXT>` and the ChatML `<|...|>` markers into special
tokens wherever they appear in the prompt string. User text carrying them could forge image slots
(and break the engine's image/token alignment) or open a fake system turn, so they are broken with
a zero-width space before the text joins the chat template.
"""

from __future__ import annotations

import re

ZERO_WIDTH_SPACE = "\u200b"

# `<|` opens every ChatML control token; the image tags are matched whatever their case.
_CONTROL = re.compile(r"<(?=\|)|<(?=/?(?:img|img_context|video)>)", re.IGNORECASE)


def neutralize_control_tokens(text: str) -> str:
    """Insert U+200B after the `<` of any control-token look-alike; idempotent."""
    return _CONTROL.sub("<" + ZERO_WIDTH_SPACE, text)
