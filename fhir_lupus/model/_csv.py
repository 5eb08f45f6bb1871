"""Reading one CSV file of a trial data directory: header, rows, and the errors that stop a whole file.

A file-level problem is one ``InputError`` naming the file and line (the command exits 2), never one refusal per
row: a header with a missing or unknown column (``labs.csv:1: missing column value; unknown column
result_value``), a byte that is not UTF-8 (at its real line, with what to do), a quote that never closes. A row
whose cell count differs from the header's is refused on its own.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from fhir_lupus.errors import InputError

__all__ = ["MAX_DIGITS", "has_rows", "number_problem", "read_rows"]

# FHIR decimals are exchanged as JSON numbers; R4 asks for at least 18 significant digits and our JSON writer
# takes integers up to 64 bits. A reported number beyond either is a typing error, refused with its column.
MAX_DIGITS = 18


def number_problem(value: Decimal, text: str | None = None) -> str | None:
    """Why ``value`` cannot be a reported number (too many digits, too large, too small a step), else None.
    ``text``, the cell it was read from, spares the digit count when it is short (most cells)."""
    if not value.is_finite():
        return f"{value} is not a finite number"
    if value and (value.adjusted() >= MAX_DIGITS or value.adjusted() < -MAX_DIGITS):
        return f"{value} is beyond {MAX_DIGITS} digits: not a plausible result (a typing error?)"
    if text is not None and len(text) <= MAX_DIGITS:
        return None
    digits = value.as_tuple()
    if len(digits.digits) > MAX_DIGITS:
        return f"{value} has more than {MAX_DIGITS} digits: not a plausible result (a typing error?)"
    if isinstance(digits.exponent, int) and digits.exponent < -MAX_DIGITS:
        return f"{value} has more than {MAX_DIGITS} decimal places"
    return None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> InputError:
    """The error for a byte that is not UTF-8, at its physical line (the decoder reads ahead in blocks, so the
    reader's own line count is wrong): found by decoding the file's bytes."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as found:
        offset = found.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        byte = data[offset]
        return InputError(
            path.name,
            line,
            None,
            f"byte 0x{byte:02x} (character {column} of the line) is not UTF-8: save the file as UTF-8 "
            "(e.g. in Excel: Save As, 'CSV UTF-8'; or iconv -f GB18030 -t UTF-8)",
        )
    return InputError(path.name, 1, None, f"not UTF-8 ({exc.reason}): save the file as UTF-8")


def has_rows(path: Path) -> bool:
    """Whether the file holds at least one row with a non-blank cell after its header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                next(reader)
                return any(any(cell.strip() for cell in cells) for cells in reader)
            except StopIteration:
                return False
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, exc) from None
            except csv.Error as exc:
                raise InputError(path.name, reader.line_num, None, f"malformed CSV: {exc}") from None
    except OSError as exc:
        raise InputError(str(path), 0, None, f"cannot be read: {exc.strerror or exc}") from None


def read_rows(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, dict[str, str], str | None]]:
    """Yield (line, row-dict, problem) for each non-blank record of a CSV file checked against ``model``'s
    fields. The line is where the record starts (quoted cells may span lines); ``problem`` is set for a row
    whose cell count is not the header's. A header problem raises InputError before any row."""
    fields = model.model_fields
    required = [name for name, info in fields.items() if info.is_required()]
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(str(path), 0, None, f"cannot be read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except csv.Error as exc:
            raise InputError(path.name, 1, None, f"unreadable header: {exc}") from None
        problems = []
        missing = [name for name in required if name not in header]
        unknown = [name for name in header if name not in fields]
        repeated = sorted({name for name in header if header.count(name) > 1})
        if missing:
            problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        if repeated:
            problems.append(f"repeated column{'s' if len(repeated) > 1 else ''} {', '.join(repeated)}")
        if problems:
            raise InputError(
                path.name, 1, None, "; ".join(problems) + " (the columns are in docs/csv-layout.md; nothing was read)"
            )
        line = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, exc) from None
            except csv.Error as exc:
                raise InputError(path.name, line, None, f"malformed CSV: {exc}") from None
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            row = dict(zip(header, cells, strict=False))
            if len(cells) != len(header):
                yield start, row, f"row has {len(cells)} cells, the header has {len(header)}"
                continue
            yield start, row, None
