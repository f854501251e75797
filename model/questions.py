"""Multiple-choice questions, asked the way FaceXBench asks them.

FaceLLM's published accuracy is FaceXBench accuracy: a question, an instruction to answer with
the option's letter, and the options as "(A) …" lines, answered with one letter. The faces
endpoint asks each attribute this way, and `facellm-eval facexbench` builds its prompts with the
same `MultipleChoice`, so the benchmark measures the path that serves. Each option's letter is a
single token, so one constrained decoding step answers, and that step's distribution over the
letters is the answer's whole distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"

# The benchmark's answer instruction, for questions that bring none of their own.
DEFAULT_INSTRUCTION = (
    "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
)


class NotAnOption(ValueError):
    """The answer is not one of the question's letters."""


@dataclass(frozen=True)
class MultipleChoice:
    """One question and its options; `context` and `task_description` come before the question
    (FaceXBench's tool context and task description)."""

    question: str
    options: tuple[str, ...]
    instruction: str = DEFAULT_INSTRUCTION
    context: str | None = None
    task_description: str | None = None

    def __post_init__(self) -> None:
        if not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"a question takes 2 to {len(LETTERS)} options")

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.options)])

    def prompt(self) -> str:
        """The text after the image(s): context, task description, question, instruction, then
        the options, one line each."""
        lines = [line for line in (self.context, self.task_description) if line]
        lines += [self.question, self.instruction]
        lines += [
            f"({letter}) {option}"
            for letter, option in zip(self.letters, self.options, strict=True)
        ]
        return "".join(f"{line}\n" for line in lines)

    def index(self, letter: str) -> int:
        """Which option `letter` names; NotAnOption for anything else."""
        if letter not in self.letters:
            raise NotAnOption(f"{letter[:8]!r} is not one of the options {''.join(self.letters)}")
        return self.letters.index(letter)
