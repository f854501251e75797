import pytest

from model.control_tokens import ZERO_WIDTH_SPACE, neutralize_control_tokens

ZW = ZERO_WIDTH_SPACE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<img>", f"<{ZW}img>"),
        ("</img>", f"<{ZW}/img>"),
        ("<IMG_CONTEXT><img_context>", f"<{ZW}IMG_CONTEXT><{ZW}img_context>"),
        ("a <Video> b", f"a <{ZW}Video> b"),
        ("<|im_start|>system", f"<{ZW}|im_start|>system"),
        ("x<|im_end|><|endoftext|>", f"x<{ZW}|im_end|><{ZW}|endoftext|>"),
        ("<|vision_pad|>", f"<{ZW}|vision_pad|>"),
    ],
)
def test_control_tokens_are_broken(text: str, expected: str) -> None:
    assert neutralize_control_tokens(text) == expected


@pytest.mark.parametrize(
    "text", ["", "plain text", "a < b > c", "<b>bold</b>", "<image>", "<imgx>"]
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert neutralize_control_tokens(text) == text


def test_idempotent() -> None:
    once = neutralize_control_tokens("<img><|im_start|></IMG><IMG_CONTEXT>")
    assert neutralize_control_tokens(once) == once
    for token in ("<img>", "</img>", "<IMG_CONTEXT>", "<|im_start|>"):
        assert token.lower() not in once.lower()
