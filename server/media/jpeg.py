"""Counting a JPEG's scans before it is decoded.

A JPEG is a sequence of marker segments; `FFDA` (start of scan) begins a scan, whose entropy-coded
data runs to the next marker. A progressive JPEG refines its coefficients over several scans, and
libjpeg decodes every scan, each a full pass over the image, however many there are: it only
warns about a scan script that makes no sense. So a small file of repeated scans costs CPU in
proportion to its size (a 165 KB 4096² file with 3,000 scans: 8 s). Real progressive photos have
about 10 scans; counting them costs microseconds, decoding a bomb costs minutes.
"""

from __future__ import annotations

_SOS = 0xDA  # start of scan
_EOI = 0xD9  # end of image
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn: no length field


def count_scans(data: bytes, stop_after: int) -> int:
    """How many scans the JPEG `data` has, counting no further than `stop_after` + 1 (enough to
    refuse it). Malformed structure ends the count: the decoder will refuse such a file."""
    scans = 0
    pos = 2  # after SOI
    end = len(data)
    while pos + 1 < end and scans <= stop_after:
        if data[pos] != 0xFF:
            return scans  # not a marker where one must be: the decoder decides
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 3 >= end:
            break
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])  # the segment's length counts itself
        if marker == _SOS:
            scans += 1
            pos = _end_of_entropy_data(data, pos)
    return scans


def _end_of_entropy_data(data: bytes, pos: int) -> int:
    """Where the next real marker starts: FF00 is a stuffed data byte, FFD0–FFD7 are restart
    markers inside the scan's data."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos
