"""POST /v1/files bodies: multipart/form-data parsed as it arrives, the file part streamed into
the store. Nothing is held whole: not in memory, and not in a temporary upload file either
(FastAPI's `UploadFile` would spool it to disk first, images included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from server.batch.blobs import BlobWriter
from server.errors import InvalidRequest, PayloadTooLarge

SMALL_FIELD = 256  # bytes of a form field other than the file (purpose)


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_lines: int


@dataclass
class Upload:
    """What arrived: the form's fields, and the file's name, size and line count."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0  # bytes of the file
    lines: int = 0
    last_byte: bytes = b""

    @property
    def line_count(self) -> int:
        """Lines, the last one counted though it lacks its newline."""
        return self.lines + (1 if self.size and self.last_byte != b"\n" else 0)


class _Form:
    """python-multipart's callbacks: headers of each part, then its data, routed by name."""

    def __init__(self, writer: BlobWriter, limits: UploadLimits) -> None:
        self.writer = writer
        self.limits = limits
        self.upload = Upload()
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.part: str | None = None  # the current part's form name
        self.value = b""

    def on_part_begin(self) -> None:
        self.headers, self.part, self.value = {}, None, b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part = options.get(b"name", b"").decode("utf-8", "replace")
        if self.part == "file":
            if self.upload.filename is not None:
                raise InvalidRequest("Send one file per upload.", param="file")
            filename = options.get(b"filename", b"upload.jsonl")
            self.upload.filename = filename.decode("utf-8", "replace")[-255:]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self.part != "file":
            self.value += piece
            if len(self.value) > SMALL_FIELD:
                raise InvalidRequest(f"Form field {self.part!r} is too long.", param=self.part)
            return
        up = self.upload
        up.size += len(piece)
        if up.size > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"The file exceeds {self.limits.max_bytes} bytes.",
                param="file",
                code="file_too_large",
            )
        up.lines += piece.count(b"\n")
        if up.lines > self.limits.max_lines:
            raise InvalidRequest(
                f"The file has more than {self.limits.max_lines} lines.",
                param="file",
                code="too_many_lines",
            )
        if piece:
            up.last_byte = piece[-1:]
        self.writer.write(piece)

    def on_part_end(self) -> None:
        if self.part and self.part != "file":
            self.upload.fields[self.part] = self.value.decode("utf-8", "replace")


async def receive(
    content_type: str, body: AsyncIterator[bytes], writer: BlobWriter, limits: UploadLimits
) -> Upload:
    """Parse the form, writing its file part through `writer` (the caller commits or discards
    it). Refuses what is not multipart, not one file, or past the limits."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Send the file as multipart/form-data with a `file` and `purpose`.",
            code="invalid_content_type",
        )
    form = _Form(writer, limits)
    callbacks = {name: getattr(form, name) for name in dir(_Form) if name.startswith("on_")}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise InvalidRequest("The multipart body is malformed.", code="invalid_multipart") from None
    if form.upload.filename is None:
        raise InvalidRequest("The form has no `file` part.", param="file", code="missing_file")
    return form.upload
