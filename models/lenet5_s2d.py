"""LeNet-5 with a space-to-depth stem: the same dense head on 16x fewer pixels with 16x more channels.

Why: on CPUs with AMX (Intel Sapphire/Emerald/Granite Rapids) XNNPACK runs every int8 convolution on a
kernel whose cost is per 16 output pixels per kernel tap whatever the channel count up to 64, so LeNet-5's
first convolution (one input channel, 5x5 on 28x28) is 7x slower in int8 than in float32 and the int8
model 3x slower than the float one. SpaceToDepth(4) turns 28x28x1 into 7x7x16, so both convolutions
(3x3, 16->64->16 channels) work on 49 pixels: the int8 model is about 0.5x the float32 one there, and as
accurate as LeNet-5 on mnist_5k (benchmarks/RESULTS.md, "int8 on an AMX CPU"). The stem has 64 filters, not 32:
on an AVX2-only EPYC (Zen 3) 32 reached 0.980-0.984 on mnist_5k's test split over four seeds, 64 reached
0.984-0.994 (0.994 at the default seed, as on an AVX-512 EPYC); AMX's int8 cost is the same up to 64 channels
(benchmarks/RESULTS.md, "mnist_5k on an AVX2 CPU").
"""

from __future__ import annotations

import tf_keras as keras

from models.lenet5 import conv_block, dense_head
from models.loading import SpaceToDepth
from models.registry import register

BLOCK = 4  # 28x28x1 -> 7x7x16


@register("lenet5_s2d", min_input_size=28, max_input_size=32)  # designed, like LeNet-5, for 28-32 px
def build_lenet5_s2d(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, stem_filters=64):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = SpaceToDepth(BLOCK, name="space_to_depth")(inputs)
    for filters in (stem_filters, 16):  # 7x7x16 -> 7x7x64 -> 7x7x16: LeNet-5's 784 features before the dense layers
        x = conv_block(x, filters, 3, regularizer, batch_norm)
    return keras.Model(inputs, dense_head(x, num_classes, regularizer, dropout_rate), name="lenet5_s2d")
