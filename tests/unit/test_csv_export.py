"""The one CSV writer of the monthly reports (hub/exports.py ``to_csv``), as the office's export and
the district's both write it: what Excel needs to open it with the Vietnamese letters (a UTF-8
byte-order mark, CRLF), headings first, an empty cell where a figure is missing, and cells holding
a comma or a quote kept whole."""

from __future__ import annotations

import csv
import io

import pytest

from hub import exports
from hub.district import reports_export
from hub.exports import Monthly

pytestmark = pytest.mark.unit


def _report(sheets: tuple[str, ...]) -> Monthly:
    head = ["STT", "Đơn vị", "Tỷ lệ hài lòng %", "Ghi chú"]
    rows: list[list[object]] = [
        [1, "UBND phường 1", 72.7, 'Bị loại: cán bộ bấm thay, "nhầm"'],
        [None, "Tổng cộng", None, ""],
    ]
    return Monthly(
        month="2026-06",
        office="UBND phường 1",
        lang="vi",
        headings={s: head for s in sheets},
        rows={s: rows for s in sheets},
        notes={s: ["BÁO CÁO (not in the CSV)"] for s in sheets},
    )


def test_the_office_and_the_district_write_the_same_bytes() -> None:
    hub = exports.to_csv(_report(exports.SHEETS), "field").encode("utf-8")
    district = reports_export.to_csv(_report(reports_export.SHEETS), "field")
    assert hub == district
    assert district.startswith(b"\xef\xbb\xbfSTT,\xc4\x90\xc6\xa1n v\xe1\xbb\x8b,")  # BOM, "Đơn vị"
    text = district.decode("utf-8-sig")
    assert text.count("\r\n") == 3 and text.endswith("\r\n") and "BÁO CÁO" not in text
    assert text.splitlines()[2] == ",Tổng cộng,,"  # missing figures are empty cells, not "None"
    # what a spreadsheet program reads back: the cell with a comma and quotes is one cell
    back = list(csv.reader(io.StringIO(text)))
    assert back[1] == ["1", "UBND phường 1", "72.7", 'Bị loại: cán bộ bấm thay, "nhầm"']


def test_a_sheet_the_report_does_not_have_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(ValueError, match="is not one of official, field, case"):
        exports.to_csv(_report(exports.SHEETS), "office")
    with pytest.raises(ValueError, match="is not one of office, official, field"):
        reports_export.to_csv(_report(reports_export.SHEETS), "case")
