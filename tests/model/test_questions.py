"""Multiple-choice questions (model/questions.py): FaceXBench's format, and one builder for the
faces endpoint and `facellm-eval facexbench`."""

from __future__ import annotations

import pytest

from evals.benchmark import Question as BenchmarkQuestion
from evals.benchmark import build_messages
from model.attributes import multiple_choice
from model.fake_engine import FakeEngine
from model.questions import DEFAULT_INSTRUCTION, MultipleChoice, NotAnOption
from tests.conftest import MakeClient
from tests.images import astronaut, data_url


def test_prompt_is_context_task_question_instruction_then_lettered_options() -> None:
    choice = MultipleChoice(
        "How old?", ("young", "old"), context="Tools: none.", task_description="Ages."
    )
    assert choice.prompt() == (
        f"Tools: none.\nAges.\nHow old?\n{DEFAULT_INSTRUCTION}\n(A) young\n(B) old\n"
    )
    assert choice.letters == ("A", "B")


def test_letters_map_back_and_anything_else_is_refused() -> None:
    choice = MultipleChoice("?", ("a", "b", "c"))
    assert [choice.index(letter) for letter in "ABC"] == [0, 1, 2]
    for answer in ("D", "a", "", "AB", " A"):
        with pytest.raises(NotAnOption):
            choice.index(answer)


@pytest.mark.parametrize("count", [0, 1, 11])
def test_two_to_ten_options(count: int) -> None:
    with pytest.raises(ValueError, match="2 to 10"):
        MultipleChoice("?", tuple(str(i) for i in range(count)))


async def test_the_endpoint_and_facexbench_ask_through_the_same_builder(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths call MultipleChoice.prompt for their text: a change to how questions are asked
    reaches the benchmark and the endpoint alike."""
    asked: list[str] = []
    real_prompt = MultipleChoice.prompt

    def spy(self: MultipleChoice) -> str:
        asked.append(self.question)
        return real_prompt(self)

    monkeypatch.setattr(MultipleChoice, "prompt", spy)
    engine = FakeEngine()
    async with make_client(engine) as client:
        body = {"image": data_url(astronaut()), "attributes": ["eyewear"]}
        assert (await client.post("/v1/faces/analyze", json=body)).status_code == 200
    (request,) = engine.requests
    assert asked == ["What does the person in the image wear over the eyes?"]
    assert request.messages[0].parts[-1] == real_prompt(multiple_choice("eyewear"))

    benchmark_question = BenchmarkQuestion(
        id="f/1",
        category="bias_fairness",
        task="age",
        dataset="fairface",
        num_images="single",
        image_paths=("images/1.png",),
        text="How old is the person?",
        options=("0-2", "3-9"),
        correct="A",
    )
    (message,) = build_messages(benchmark_question, ["data:image/png;base64,AA=="])
    assert asked[-1] == "How old is the person?"
    assert message["content"][-1]["text"].endswith("(A) 0-2\n(B) 3-9\n")
