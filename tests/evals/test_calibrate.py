"""`facellm-eval calibrate`, the parts without a server: labels, scores, answers, files, report."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from evals.calibration.fairface import (
    ATTRIBUTES,
    LabelError,
    LabelledFace,
    load_fairface,
    map_label,
    sample,
)
from evals.calibration.metrics import Record, bin_index, calibration
from evals.calibration.plot import INSTALL_HINT, reliability_diagram, require_matplotlib
from evals.calibration.records import (
    RECORDS_FILE,
    RecordsWriter,
    ResponseShapeError,
    parse_analysis,
    read_saved,
    scored_records,
)
from evals.calibration.run import CalibrateConfig, write_outputs
from evals.client import EvalError
from model import attributes as attrs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FAIRFACE_AGES = {
    "0-2": "0-2",
    "3-9": "3-9",
    "10-19": "10-19",
    "20-29": "20-29",
    "30-39": "30-39",
    "40-49": "40-49",
    "50-59": "50-59",
    "60-69": "60-69",
    "more than 70": "70+",
}
FAIRFACE_GENDERS = {"Male": "male", "Female": "female"}
FAIRFACE_RACES = {
    "White": "white",
    "Black": "black",
    "Latino_Hispanic": "latino_hispanic",
    "East Asian": "east_asian",
    "Southeast Asian": "southeast_asian",
    "Indian": "indian",
    "Middle Eastern": "middle_eastern",
}


def values(name: str) -> tuple[str, ...]:
    return next(a.values for a in attrs.ATTRIBUTES if a.name == name)


# --- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "table"),
    [
        ("age_group", FAIRFACE_AGES),
        ("perceived_gender", FAIRFACE_GENDERS),
        ("perceived_race", FAIRFACE_RACES),
    ],
)
def test_every_fairface_label_maps_to_an_attribute_value(
    attribute: str, table: dict[str, str]
) -> None:
    for raw, ours in table.items():
        assert map_label(attribute, raw) == ours
        assert ours in values(attribute)
    # every value but the abstain one is some FairFace label: no class the model can't be right on
    assert set(table.values()) == set(values(attribute)) - {"uncertain"}


def test_labels_match_case_and_space_insensitively_and_take_our_spellings() -> None:
    assert map_label("perceived_race", "  east asian ") == "east_asian"
    assert map_label("perceived_race", "middle_eastern") == "middle_eastern"
    assert map_label("age_group", "70+") == "70+"
    assert map_label("perceived_gender", "FEMALE") == "female"


@pytest.mark.parametrize(
    ("attribute", "raw"),
    [
        ("age_group", "uncertain"),  # the abstain value is never a label
        ("age_group", "70"),
        ("perceived_gender", "Other"),
        ("perceived_race", "Asian"),
        ("perceived_race", ""),
    ],
)
def test_unknown_labels_do_not_map(attribute: str, raw: str) -> None:
    assert map_label(attribute, raw) is None


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_fairface_csv_is_read_with_extra_columns_ignored(tmp_path: Path) -> None:
    csv = write_csv(
        tmp_path / "fairface_label_val.csv",
        "\ufefffile,age,gender,race,service_test\n"
        "val/1.jpg,3-9,Male,East Asian,False\n"
        "val/2.jpg,more than 70,Female,Latino_Hispanic,True\n",
    )
    faces = load_fairface(csv)
    assert faces == [
        LabelledFace(
            2,
            "val/1.jpg",
            {"age_group": "3-9", "perceived_gender": "male", "perceived_race": "east_asian"},
        ),
        LabelledFace(
            3,
            "val/2.jpg",
            {"age_group": "70+", "perceived_gender": "female", "perceived_race": "latino_hispanic"},
        ),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,age,gender\na.jpg,3-9,Male\n", "no column race"),
        ("name,age,gender,race\n", "no column file"),
        ("", "no column file, age, gender, race"),
        ("file,age,gender,race\n", "has no labelled faces"),
        (
            "file,age,gender,race\na.jpg,3-9,Male,White\nb.jpg,3-9,Other,White\n",
            "line 3: unknown gender label 'Other'",
        ),
        ("file,age,gender,race\na.jpg,70,Male,White\n", "line 2: unknown age label '70'"),
        ("file,age,gender,race\n,3-9,Male,White\n", "line 2: empty `file`"),
        (
            "file,age,gender,race\na.jpg,3-9,Male,White\na.jpg,3-9,Male,White\n",
            "line 3: 'a.jpg' already on line 2",
        ),
    ],
)
def test_csv_errors_say_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        load_fairface(write_csv(tmp_path / "labels.csv", text))


def test_a_missing_csv_is_a_label_error(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="cannot read"):
        load_fairface(tmp_path / "nope.csv")


def test_sample_is_seeded_and_keeps_file_order() -> None:
    faces = [LabelledFace(i + 2, f"{i}.jpg", {}) for i in range(20)]
    picked = sample(faces, 5, seed=3)
    assert picked == sample(faces, 5, seed=3)
    assert len(picked) == 5
    assert picked == sorted(picked, key=lambda f: f.line)
    assert sample(faces, None, 0) == faces
    assert sample(faces, 50, 0) == faces


# --- scores ------------------------------------------------------------------------------------


def rec(label: str, predicted: str, confidence: float) -> Record:
    return Record("f", "age_group", label, predicted, confidence)


# Six answers over B = 3 bins [0, 1/3), [1/3, 2/3), [2/3, 1]:
#   bin 0: 0.1 wrong                     → acc 0,   conf 0.1,          gap 0.1, share 1/6
#   bin 1: 0.4 right, 0.6 right          → acc 1,   conf 0.5,          gap 0.5, share 2/6
#   bin 2: 0.7 right, 0.8 right, 1.0 wrong → acc 2/3, conf 2.5/3 = 5/6, gap 1/6, share 3/6
# ECE = 0.1/6 + 0.5·2/6 + (1/6)·3/6 = 1/60 + 10/60 + 5/60 = 16/60 ≈ 0.26667
# accuracy = 4/6, mean confidence = 3.6/6 = 0.6 (|accuracy − confidence| = 0.0667 < ECE: bin 1 is
# under-confident, bins 0 and 2 over-confident, and ECE does not let them cancel).
HAND = [
    rec("3-9", "20-29", 0.1),
    rec("3-9", "3-9", 0.4),
    rec("70+", "70+", 0.6),
    rec("0-2", "0-2", 0.7),
    rec("10-19", "10-19", 0.8),
    rec("10-19", "uncertain", 1.0),
]


def test_ece_and_accuracy_of_a_hand_computed_example() -> None:
    scores = calibration("age_group", HAND, bins=3, abstain="uncertain")
    assert scores.count == 6
    assert scores.accuracy == pytest.approx(4 / 6)
    assert scores.mean_confidence == pytest.approx(0.6)
    assert scores.ece == pytest.approx(16 / 60)
    assert scores.abstain_answers == 1
    assert [b.count for b in scores.bins] == [1, 2, 3]
    assert [b.accuracy for b in scores.bins] == pytest.approx([0.0, 1.0, 2 / 3])
    assert [b.mean_confidence for b in scores.bins] == pytest.approx([0.1, 0.5, 5 / 6])
    assert [b.lower for b in scores.bins] == pytest.approx([0, 1 / 3, 2 / 3])
    assert [b.upper for b in scores.bins] == pytest.approx([1 / 3, 2 / 3, 1])


def test_perfect_calibration_scores_zero_and_empty_bins_add_nothing() -> None:
    records = [rec("a", "a", 0.75)] * 3 + [rec("a", "b", 0.75)]  # 75 % sure, 75 % right
    scores = calibration("age_group", records, bins=10)
    assert scores.ece == pytest.approx(0.0)
    assert [b.count for b in scores.bins] == [0] * 7 + [4, 0, 0]
    assert scores.bins[0].accuracy is None


def test_an_empty_attribute_scores_zero() -> None:
    scores = calibration("age_group", [], bins=4)
    assert (scores.count, scores.accuracy, scores.ece) == (0, 0.0, 0.0)
    assert len(scores.bins) == 4


@pytest.mark.parametrize(
    ("confidence", "bins", "index"),
    [(0.0, 10, 0), (0.0999, 10, 0), (0.1, 10, 1), (0.95, 10, 9), (1.0, 10, 9), (1 / 3, 3, 1)],
)
def test_bins_are_closed_below_and_one_falls_in_the_last(
    confidence: float, bins: int, index: int
) -> None:
    assert bin_index(confidence, bins) == index


@pytest.mark.parametrize("confidence", [-0.01, 1.01, math.nan])
def test_confidences_outside_zero_one_are_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        bin_index(confidence, 10)


# --- answers -----------------------------------------------------------------------------------


def analysis(attributes: dict[str, object]) -> dict[str, object]:
    bbox = {"x": 0, "y": 0, "w": 64, "h": 64}
    return {"faces": [{"bbox": bbox, "score": 1.0, "attributes": attributes}]}


def entry(value: str, confidence: float, *alternatives: tuple[str, float]) -> dict[str, object]:
    return {
        "value": value,
        "confidence": confidence,
        "abstained": False,
        "alternatives": [{"value": v, "confidence": c} for v, c in alternatives],
    }


def test_the_confidence_answer_is_parsed() -> None:
    body = analysis(
        {
            "age_group": entry("20-29", 0.62, ("30-39", 0.21), ("10-19", 0.05)),
            "perceived_gender": entry("female", 0.93, ("male", 0.07)),
            "perceived_race": entry("white", 1, ("black", 0)),
            "eyewear": entry("none", 0.9),  # not asked: ignored
        }
    )
    parsed = parse_analysis(body, ATTRIBUTES)
    assert set(parsed) == set(ATTRIBUTES)
    age = parsed["age_group"]
    assert (age.predicted, age.confidence, age.abstained) == ("20-29", 0.62, False)
    assert age.alternatives == (("30-39", 0.21), ("10-19", 0.05))
    assert parsed["perceived_race"].confidence == 1.0


def test_an_abstention_is_scored_as_the_model_pick() -> None:
    abstained = {
        "value": "uncertain",
        "confidence": 0.3,
        "abstained": True,
        "alternatives": [
            {"value": "white", "confidence": 0.3},
            {"value": "black", "confidence": 0.2},
        ],
    }
    body = analysis({"perceived_race": abstained})
    race = parse_analysis(body, ["perceived_race"])["perceived_race"]
    assert (race.predicted, race.confidence, race.abstained) == ("white", 0.3, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (analysis({"age_group": "20-29"}), "ignored `confidence: true`"),
        (analysis({"age_group": entry("20-29", 1.5)}), "not in"),
        (analysis({"age_group": entry("20-29", True)}), "not a number"),  # type: ignore[arg-type]
        (analysis({"perceived_gender": entry("male", 0.9)}), "misses attributes age_group"),
        ({"faces": []}, "exactly one face"),
        ([], "exactly one face"),
        (
            analysis({"age_group": {"value": "uncertain", "confidence": 0.1, "abstained": True}}),
            "abstained without alternatives",
        ),
    ],
)
def test_other_shapes_are_refused(body: object, message: str) -> None:
    with pytest.raises(ResponseShapeError, match=message):
        parse_analysis(body, ["age_group"])


# --- records file and outputs -------------------------------------------------------------------


def labelled(
    file: str, age: str = "20-29", gender: str = "male", race: str = "white"
) -> LabelledFace:
    labels = {"age_group": age, "perceived_gender": gender, "perceived_race": race}
    return LabelledFace(2, file, labels)


def test_records_resume_errors_clear_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    a, b = labelled("a.jpg"), labelled("b.jpg")
    answer = parse_analysis(
        analysis(
            {
                n: entry(v, 0.8)
                for n, v in zip(ATTRIBUTES, ["20-29", "female", "white"], strict=True)
            }
        ),
        ATTRIBUTES,
    )
    writer = RecordsWriter(tmp_path)
    writer.error(a, "HTTP 503: busy")
    writer.answers(a, answer)
    writer.error(b, "timeout")
    writer.close()
    with (tmp_path / RECORDS_FILE).open("a") as f:
        f.write('{"file": "b.jpg", "attri')  # killed mid-write
    lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
    assert json.loads(lines[1]) == {
        "file": "a.jpg",
        "attribute": "age_group",
        "label": "20-29",
        "predicted": "20-29",
        "confidence": 0.8,
        "abstained": False,
        "alternatives": [],
    }
    saved = read_saved(tmp_path)
    assert saved.complete("a.jpg", ATTRIBUTES)
    assert not saved.complete("b.jpg", ATTRIBUTES)
    assert saved.errors == {"b.jpg": "timeout"}
    # labels come from the CSV, not the records file: a corrected label rescores without asking
    fixed = labelled("a.jpg", gender="female")
    records = scored_records([fixed, b], saved, "perceived_gender")
    assert records == [Record("a.jpg", "perceived_gender", "female", "female", 0.8)]
    # the writer ends a torn line before appending
    RecordsWriter(tmp_path).close()
    assert (tmp_path / RECORDS_FILE).read_text().endswith('"attri\n')


def test_report_files_and_diagrams_are_written(tmp_path: Path) -> None:
    faces = [labelled(f"{i}.jpg", age=r.label) for i, r in enumerate(HAND)]
    writer = RecordsWriter(tmp_path)
    for face, r in zip(faces, HAND, strict=True):
        writer.answers(
            face,
            parse_analysis(
                analysis(
                    {
                        "age_group": entry(r.predicted, r.confidence),
                        "perceived_gender": entry("male", 0.9),
                        "perceived_race": entry("black", 0.5),
                    }
                ),
                ATTRIBUTES,
            ),
        )
    writer.close()
    late = labelled("late.jpg")
    faces += [late, labelled("never.jpg")]
    RecordsWriter(tmp_path).error(late, "HTTP 400: bad image")
    config = CalibrateConfig(data=tmp_path / "labels.csv", out=tmp_path, bins=3)
    report, scores = write_outputs(config, faces, read_saved(tmp_path), {"model": "m", "bins": 3})

    assert json.loads((tmp_path / "report.json").read_text()) == report
    age = report["attributes"]["age_group"]
    assert (age["count"], age["accuracy"], age["ece"]) == (6, 0.6667, 0.2667)
    assert age["mean_confidence"] == 0.6
    assert age["abstain_answers"] == 1
    assert [b["count"] for b in age["bins"]] == [1, 2, 3]
    gender, race = report["attributes"]["perceived_gender"], report["attributes"]["perceived_race"]
    assert (gender["accuracy"], gender["ece"]) == (1.0, 0.1)
    assert (race["accuracy"], race["ece"]) == (0.0, 0.5)
    assert report["errors"] == [{"file": "late.jpg", "error": "HTTP 400: bad image"}]
    assert report["missing"] == ["never.jpg"]
    assert "ECE = Σ_b (n_b/N)" in report["ece_definition"]
    assert [s.attribute for s in scores] == list(ATTRIBUTES)

    markdown = (tmp_path / "report.md").read_text()
    assert "| `age_group` | 6 | 0.667 | 0.600 | 0.267 | 1 |" in markdown
    assert "| [0.67, 1.00] | 3 | 0.667 | 0.833 | 0.083 |" in markdown
    assert "- `late.jpg`: HTTP 400: bad image" in markdown
    assert "- `never.jpg`: not answered" in markdown
    for attribute in ATTRIBUTES:
        name = f"reliability-{attribute}.png"
        assert f"![Reliability diagram of {attribute}]({name})" in markdown
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(tmp_path / name) as image:
            image.load()
            assert image.format == "PNG"
            assert image.width > 200 and image.height > 200


def test_a_diagram_of_no_answers_is_still_drawn(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    reliability_diagram(calibration("age_group", [], bins=10), path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(EvalError, match=r"facellm-serve\[eval\]") as caught:
        require_matplotlib()
    assert str(caught.value) == INSTALL_HINT
    with pytest.raises(EvalError, match="matplotlib"):
        reliability_diagram(calibration("age_group", [], bins=2), Path("never-written.png"))
