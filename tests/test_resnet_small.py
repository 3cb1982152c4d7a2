"""resnet_small: shapes, the parameter count that width and depth give, argument checks, readable layer names."""

from __future__ import annotations

import re

import pytest
import tf_keras as keras

from models import registry
from models.resnet_small import build_resnet_small


def expected_parameters(channels: int, num_classes: int, width: int, depth: int) -> int:
    """Counted by hand: 3x3 convs without bias, batch norm's 4 values per channel (2 trained, 2 statistics), a 1x1
    projection shortcut in each stage's first block where the shape changes, the dense logits."""

    def conv_bn(inputs: int, outputs: int, kernel: int = 3) -> int:
        return kernel * kernel * inputs * outputs + 4 * outputs

    total = conv_bn(channels, width)  # stem
    previous = width
    for stage, stride in enumerate((1, 2, 2)):
        filters = width * 2**stage
        for block in range(depth):
            inputs = previous if block == 0 else filters
            total += conv_bn(inputs, filters) + conv_bn(filters, filters)
            if block == 0 and (stride != 1 or inputs != filters):
                total += conv_bn(inputs, filters, kernel=1)
        previous = filters
    return total + previous * num_classes + num_classes


@pytest.mark.parametrize("input_shape", [(32, 32, 3), (28, 28, 1)])
def test_builds_with_logits_for_each_class(input_shape):
    model = build_resnet_small(input_shape, num_classes=7)
    assert model.output_shape == (None, 7)
    assert model.layers[-1].name == "logits" and model.layers[-1].activation is keras.activations.linear
    assert model.count_params() == expected_parameters(input_shape[-1], 7, width=16, depth=1)


def test_the_default_is_the_79k_reference_and_is_registered_for_32_pixels():
    builder = registry.get_builder("resnet_small")
    assert builder is build_resnet_small and registry.min_input_size("resnet_small") == 32
    assert build_resnet_small((32, 32, 3), 10).count_params() == 78_714


@pytest.mark.parametrize("width, depth", [(8, 1), (16, 2), (32, 1), (8, 3)])
def test_width_and_depth_change_the_parameter_count_as_counted(width, depth):
    model = build_resnet_small((32, 32, 3), 10, width=width, depth=depth)
    assert model.count_params() == expected_parameters(3, 10, width, depth)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convolutions) == 1 + 3 * 2 * depth + 2  # stem, two per block, two projection shortcuts
    assert model.get_layer("pool").output_shape == (None, 4 * width)


@pytest.mark.parametrize("argument", ["width", "depth"])
@pytest.mark.parametrize("value", [0, -1, 1.5, 16.0, True, "16", None])
def test_a_width_or_depth_that_is_not_a_positive_integer_is_refused_by_name(argument, value):
    with pytest.raises(
        ValueError, match=re.escape(f"resnet_small: {argument} must be a positive integer, got {value!r}")
    ):
        build_resnet_small((32, 32, 3), 10, **{argument: value})


def test_layer_names_say_where_each_layer_is():
    model = build_resnet_small((32, 32, 3), 10, dropout_rate=0.2, depth=2)
    prefixes = ("features", "stem_", "stage1_block", "stage2_block", "stage3_block", "pool", "dropout", "logits")
    assert all(layer.name.startswith(prefixes) for layer in model.layers), [layer.name for layer in model.layers]
    assert model.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)
    assert model.get_layer("stage3_block2_2_conv").filters == 64


def test_weight_decay_regularizes_every_kernel():
    model = build_resnet_small((32, 32, 3), 10, weight_decay=1e-4)
    kernels = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(model.losses) == len(kernels) == 10
