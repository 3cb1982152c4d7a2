"""The preprocessing model every table's trained and served model starts with: the raw columns by name in, one float
feature vector out. Numbers and date parts are normalized by the train split's statistics, with a missing-value
indicator for each that had empty cells and the mean in their place; each categorical column is a one-hot lookup
with an out-of-vocabulary slot (index 0, for a value train never saw). Built from artifacts/preprocess/statistics.json,
which the preprocess stage writes (components/preprocess/kinds/table.py): train builds it into the trained model and
export serves it inside the SavedModel, so train and serve compute the same features.

The vector's layout (statistics["layout"]): the normalized numbers and date parts, then the indicators, then each
categorical's one-hot block; the table models embed each block (models/table_mlp.py). tfpipe/table_encoding.py
computes the same vector in numpy, for the TFLite models that take it.
"""

from __future__ import annotations

import tf_keras as keras

from models.table_layers import DateParts, FillMissing, IsMissing

# How a column's cells arrive (tfpipe/table_encoding.py feeds them so): numbers as float32 with NaN for an empty
# cell, every other type as text with "" for one.
INPUT_DTYPES = {"numeric": "float32", "categorical": "string", "boolean": "string", "date": "string"}


def build_table_preprocessor(statistics: dict) -> keras.Model:
    """{input name: [N, 1]} -> float32 [N, statistics["output_size"]]."""
    inputs = {
        item["input"]: keras.Input(shape=(1,), dtype=INPUT_DTYPES[item["type"]], name=item["input"])
        for item in statistics["inputs"]
    }
    numeric_blocks = []
    for item in statistics["inputs"]:
        if item["type"] == "numeric":
            numeric_blocks.append(inputs[item["input"]])
        elif item["type"] == "date" and item.get("parts"):
            numeric_blocks.append(DateParts(item["parts"], name=f"date_parts_{item['input']}")(inputs[item["input"]]))
    features = []
    numeric = statistics["numeric"]
    if numeric_blocks:
        raw = (
            numeric_blocks[0] if len(numeric_blocks) == 1 else keras.layers.Concatenate(name="numbers")(numeric_blocks)
        )
        normalized = keras.layers.Normalization(
            axis=-1,
            mean=[entry["mean"] for entry in numeric],
            variance=[entry["variance"] for entry in numeric],
            name="normalize",
        )(raw)
        features.append(FillMissing(0.0, name="fill_missing")(normalized))
        flagged = [index for index, entry in enumerate(numeric) if entry["missing"]]
        if flagged:
            features.append(IsMissing(flagged, name="missing_indicators")(raw))
    for entry in statistics["categorical"]:
        lookup = keras.layers.StringLookup(
            vocabulary=entry["vocabulary"], num_oov_indices=1, output_mode="one_hot", name=f"lookup_{entry['input']}"
        )
        features.append(lookup(inputs[entry["input"]]))
    if not features:
        raise ValueError("the table has no feature column: nothing to preprocess")
    outputs = features[0] if len(features) == 1 else keras.layers.Concatenate(name="features")(features)
    return keras.Model(inputs, outputs, name="preprocessing")
