"""The parts of a date a table's model reads (its year, the month and weekday as angles, ...), computed the same way
in TensorFlow (models/table_layers.DateParts) and in numpy (tfpipe/table_encoding.py) from the same integer
arithmetic. Reads and writes nothing.
"""

from __future__ import annotations

import math

# The date parts a date column can give, each a float (computed from ISO text YYYY-MM-DD[THH:MM:SS]); the
# preprocess stage keeps those that vary on the train split. Cyclical parts as sine and cosine: December is next
# to January.
DATE_PARTS = ("year", "month_sin", "month_cos", "day", "weekday_sin", "weekday_cos", "hour_sin", "hour_cos")
ISO_PATTERN = r"\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2})?)?)?"


def days_from_civil(year, month, day):
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for int64 tensors or numpy
    arrays alike."""
    january_or_february = (14 - month) // 12  # 1 for months 1 and 2, else 0: integer arithmetic, no booleans
    year = year - january_or_february
    era = year // 400
    year_of_era = year - era * 400
    shifted_month = month + 12 * january_or_february - 3  # March is 0
    day_of_year = (153 * shifted_month + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def part_values(name: str, year, month, day, weekday, hour, sin, cos):
    """One date part from the date's fields (tensors or arrays; sin and cos are tf.sin or np.sin)."""
    turn = 2 * math.pi
    return {
        "year": lambda: year,
        "month_sin": lambda: sin(turn * (month - 1) / 12),
        "month_cos": lambda: cos(turn * (month - 1) / 12),
        "day": lambda: day,
        "weekday_sin": lambda: sin(turn * weekday / 7),
        "weekday_cos": lambda: cos(turn * weekday / 7),
        "hour_sin": lambda: sin(turn * hour / 24),
        "hour_cos": lambda: cos(turn * hour / 24),
    }[name]()
