"""The one reader of a user's table (ingest, the schema command and predict): CSV, TSV, gzipped CSV/TSV, JSON lines and
Parquet files, read as text where the format is text, and each column parsed by its `ingest.table.columns` entry.
Reads the file it is given, writes nothing.

Rules every caller shares:
- encoding: UTF-8 (a byte-order mark is dropped), UTF-16 with a byte-order mark; a file that is not valid UTF-8 is
  read as Windows-1252 and `TableFile.encoding` says so (the stages print it);
- delimiter: a tab for .tsv, else the one of `, ; | tab` that Python's csv.Sniffer finds in the first 64 KiB;
- empty cells: MISSING_TOKENS (an empty cell, NA, N/A, NaN, null, None, ? ...), plus a column's own
  `missing_values` (the schema lists the odd tokens it found, such as `unknown` in a numeric column);
- text is stripped of surrounding spaces and Unicode-normalized (NFC), so `" Adelie"` is `Adelie`;
- numbers: what Python's float() reads (1e3, -0.5, 1_000 is not one); a non-number is a problem, named by its row;
- dates: ISO 8601 or the column's strptime `format`; with a time zone, converted to UTC; written ISO
  (YYYY-MM-DDTHH:MM:SS), which is what the serving model takes;
- rows are numbered from 1, the first row after the header (`ROW`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# (suffix, format): the longest suffix that a file name ends with decides.
TABLE_SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "na", "NaN", "nan", "NULL", "null", "Null", "None", "none", "?", "#N/A")
ROW = "__row__"  # the 1-based data row each value came from, carried beside the columns (never a column of a file)
ISO_FORMAT = "ISO8601"
# What a number or an ISO date looks like as text: the validation's regular expressions (Great Expectations) and the
# parsers below use the same ones, so a cell the check passes is a cell that parses.
NUMBER_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
ISO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
CHUNK_ROWS = 200_000  # rows parsed at a time: memory stays proportional to the typed table, not to its text


class TableReadError(ValueError):
    """The file cannot be read as a table; the message names it and what to do."""


def table_format(path: Path | str) -> str | None:
    """csv | tsv | jsonl | parquet, from the file name; None for a file that is not a table."""
    name = Path(path).name.lower()
    matches = [suffix for suffix in TABLE_SUFFIXES if name.endswith(suffix)]
    return TABLE_SUFFIXES[max(matches, key=len)] if matches else None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def detect_encoding(path: Path) -> str:
    """utf-16 (with its byte-order mark), utf-8-sig (UTF-8, with or without one), else cp1252 (Windows' Latin)."""
    with _open_bytes(path) as stream:
        head = stream.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return "utf-16"
        stream.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while block := stream.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


def sniff_delimiter(path: Path, encoding: str, file_format: str) -> str:
    if file_format == "tsv":
        return "\t"
    with _open_bytes(path) as stream:
        sample = stream.read(1 << 16).decode(encoding, errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;|\t").delimiter
    except csv.Error:
        return ","


@dataclass(frozen=True)
class TableFile:
    """How a table file is read: its format, encoding and delimiter (found once, reported by the stages)."""

    path: Path
    format: str
    encoding: str = "utf-8-sig"
    delimiter: str = ","

    @classmethod
    def open(cls, path: Path | str) -> TableFile:
        path = Path(path)
        file_format = table_format(path)
        if file_format is None:
            raise TableReadError(f"{path}: not a table file (expected {', '.join(sorted(TABLE_SUFFIXES))})")
        if not path.is_file():
            raise TableReadError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise TableReadError(f"{path}: the file is empty (no header, no rows); export the table again")
        if file_format == "parquet":
            return cls(path, file_format)
        encoding = detect_encoding(path)
        delimiter = sniff_delimiter(path, encoding, file_format) if file_format in ("csv", "tsv") else ","
        return cls(path, file_format, encoding, delimiter)

    def describe(self) -> str:
        if self.format == "parquet":
            return f"{self.path.name} (Parquet)"
        read_as = "" if self.encoding != "cp1252" else ", not valid UTF-8: read as Windows-1252"
        separator = {",": "comma", ";": "semicolon", "|": "pipe", "\t": "tab"}.get(self.delimiter, repr(self.delimiter))
        return f"{self.path.name} ({self.format}, {separator}-separated{read_as})"

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The table in chunks of raw values (text where the format is text), with ROW numbering the rows."""
        start = 1
        for chunk in self._raw_chunks(chunk_rows):
            if ROW in chunk.columns:
                raise TableReadError(f"{self.path}: a column is named {ROW!r}, which tfpipe reserves; rename it")
            chunk.columns = [normalize_text(str(name)) for name in chunk.columns]
            chunk.insert(0, ROW, np.arange(start, start + len(chunk), dtype=np.int64))
            start += len(chunk)
            yield chunk

    def read(self) -> pd.DataFrame:
        """The whole table (ROW included); a table without rows keeps its columns."""
        parts = list(self.chunks())
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def _raw_chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(self.path)
                batches = list(parquet.iter_batches(batch_size=chunk_rows))
                if not batches:
                    yield parquet.schema_arrow.empty_table().to_pandas()
                for batch in batches:
                    yield batch.to_pandas()
                return
            if self.format == "jsonl":
                reader = pd.read_json(self.path, lines=True, dtype=False, chunksize=chunk_rows, encoding=self.encoding)
                empty = True
                for chunk in reader:
                    empty = False
                    yield chunk
                if empty:
                    raise TableReadError(f"{self.path}: no rows (JSON lines: one object a line)")
                return
            reader = pd.read_csv(
                self.path,
                sep=self.delimiter,
                dtype=str,
                keep_default_na=False,
                encoding=self.encoding,
                chunksize=chunk_rows,
                skipinitialspace=False,
            )
            empty = True
            for chunk in reader:
                empty = False
                yield chunk
            if empty:  # a header and no rows: pandas yields nothing
                yield pd.read_csv(self.path, sep=self.delimiter, dtype=str, nrows=0, encoding=self.encoding)
        except pd.errors.EmptyDataError:
            raise TableReadError(f"{self.path}: the file is empty (no header, no rows); export it again") from None
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
            if isinstance(error, TableReadError):
                raise
            first = str(error).strip().splitlines()[0][:300]
            raise TableReadError(
                f"{self.path}: cannot be read as {self.format.upper()}: {first}. Check the delimiter and quoting "
                "(every row needs as many fields as the header)"
            ) from None


def normalize_text(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def as_text(values: pd.Series, missing_values: tuple[str, ...] = ()) -> pd.Series:
    """The column as text (stripped, NFC) with every empty cell NaN: what categorical, boolean and id columns hold.
    Numbers read from Parquet or JSON become the text a CSV would hold (3, not 3.0)."""
    if pd.api.types.is_bool_dtype(values):
        text = values.map(lambda value: "true" if value else "false").astype("str")
    elif pd.api.types.is_integer_dtype(values):
        text = values.astype("Int64").astype("str")
    elif pd.api.types.is_float_dtype(values):
        integral = values.dropna()
        integral = bool(len(integral)) and bool(np.all(np.mod(integral.to_numpy(), 1) == 0))
        text = (values.astype("Int64") if integral else values).astype("str")
        text = text.where(values.notna())
    else:  # vectorized: a million rows by twenty columns is twenty million cells
        text = values if pd.api.types.is_string_dtype(values) else values.astype("str")
        text = text.str.normalize("NFC").str.strip()
    missing = text.isin(MISSING_TOKENS + tuple(missing_values)) | values.isna().to_numpy()
    return text.where(~missing)


def parse_numbers(values: pd.Series, missing_values: tuple[str, ...] = ()) -> tuple[pd.Series, pd.Series]:
    """(float64 values with NaN for empty cells, a mask of the cells that hold something that is not a number)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        return numbers, pd.Series(False, index=values.index)
    text = as_text(values, missing_values)
    number = text.str.fullmatch(NUMBER_PATTERN).fillna(False).astype(bool)
    numbers = pd.to_numeric(text.where(number), errors="coerce").astype("float64")
    bad = text.notna() & ~number
    return numbers, bad


def parse_dates(values: pd.Series, date_format: str | None, missing_values: tuple[str, ...] = ()):
    """(datetime64 values, naive, UTC where the file gave a zone; NaT for empty cells, a mask of cells that hold
    something that is not a date in that format)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        dates = values.dt.tz_convert(None) if getattr(values.dt, "tz", None) is not None else values
        return dates.astype("datetime64[ns]"), pd.Series(False, index=values.index)
    text = as_text(values, missing_values)
    fmt = date_format or ISO_FORMAT
    present = text.dropna()
    if fmt == ISO_FORMAT:  # only what the ISO pattern admits (pandas alone would read "2019" as a date)
        present = present[present.str.fullmatch(ISO_DATE_PATTERN).astype(bool)]
    try:
        parsed = pd.to_datetime(present, format=fmt, errors="coerce", utc=True)
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=present.index, dtype="datetime64[ns, UTC]")
    dates = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    dates.loc[present.index] = parsed.dt.tz_convert(None).astype("datetime64[ns]")
    bad = text.notna() & dates.isna()
    return dates, bad


def iso_dates(dates: pd.Series) -> pd.Series:
    """YYYY-MM-DDTHH:MM:SS text, empty for a missing date: what the serving model's date inputs take."""
    text = dates.dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text.where(dates.notna(), "").astype("str")


def parse_column(values: pd.Series, spec) -> tuple[pd.Series, pd.Series]:
    """A column parsed by its ColumnParams: (typed values, a mask of the cells that do not parse). numeric: float64;
    date: datetime64; any other type: text (stripped)."""
    missing_values = tuple(getattr(spec, "missing_values", ()) or ())
    if spec.type == "numeric":
        return parse_numbers(values, missing_values)
    if spec.type == "date":
        return parse_dates(values, spec.format, missing_values)
    return as_text(values, missing_values), pd.Series(False, index=values.index)
