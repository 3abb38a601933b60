"""The original project's two-headed CNN, for every point of its space: build_model(params) is pure.

The architecture is the original's layer for layer, its quirks included (extra batch-norms after the residual
units; linear stride-2 convolutions with batch-norm in the inception reduction), so that trainable parameter
counts equal the original's for all 42 of its points (tests/trial/test_model.py). Deliberate deviations, each with
its reason, are listed in docs/architecture.md ("The original model, and the deliberate deviations from it"): softmax
heads, the random flip active in training only, sparse labels, mixed precision and XLA on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import PermanentError

BASE_LR = 0.001
BASE_L2 = 0.0007
OPTIMIZERS = ("Adam", "Nadam", "RMSprop")
POOLING = ("max", "avg", "all_conv", "inception")
ACTIVATIONS = ("relu", "elu")


class ParamError(PermanentError):
    """The point cannot be built: unknown, missing or out-of-range parameters (named in the message)."""


@dataclass(frozen=True)
class Arch:
    """params, checked and typed."""

    lr_rate_mult: float
    l2_weight_reg_mult: float
    batch_size: int
    optimizer: str
    coarse_labels_weight: float
    conv_dropout_drop_proba: float
    fc_dropout_drop_proba: float
    use_BN: bool
    first_conv: int | None
    residual: int | None
    conv_hiddn_units_mult: float
    nb_conv_pool_layers: int
    conv_pool_res_start_idx: int
    pooling_type: str
    conv_kernel_size: int
    res_conv_kernel_size: int
    fc_units_1_mult: float
    one_more_fc: float | None
    activation: str


def _num(params: Mapping[str, Any], key: str, low: float, high: float, integer: bool = False,
         optional: bool = False) -> Any:
    v = params[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ParamError(f"params.{key}: expected a number{' or null' if optional else ''}, got {v!r}")
    if not low <= v <= high:
        raise ParamError(f"params.{key}: {v} is outside the model's range [{low}, {high}]")
    if integer:
        if abs(v - round(v)) > 1e-6:
            raise ParamError(f"params.{key}: {v} must be a whole number")
        return int(round(v))
    return float(v)


def _one_of(params: Mapping[str, Any], key: str, options: tuple[Any, ...]) -> Any:
    v = params[key]
    if v not in options or isinstance(v, bool) != isinstance(options[0], bool):
        raise ParamError(f"params.{key}: {v!r} is not one of {list(options)}")
    return v


def check_params(params: Mapping[str, Any]) -> Arch:
    """Validate a decoded point; every problem names the parameter."""
    if not isinstance(params, Mapping):
        raise ParamError(f"params: expected a mapping, got {type(params).__name__}")
    known = set(Arch.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParamError(f"params: unknown parameter(s) {unknown}; the model knows {sorted(known)}")
    missing = sorted(known - set(params))
    if missing:
        raise ParamError(f"params: missing parameter(s) {missing}")
    return Arch(
        lr_rate_mult=_num(params, "lr_rate_mult", 1e-4, 100.0),
        l2_weight_reg_mult=_num(params, "l2_weight_reg_mult", 0.0, 100.0),
        batch_size=_num(params, "batch_size", 1, 65536, integer=True),
        optimizer=_one_of(params, "optimizer", OPTIMIZERS),
        coarse_labels_weight=_num(params, "coarse_labels_weight", 0.0, 10.0),
        conv_dropout_drop_proba=_num(params, "conv_dropout_drop_proba", 0.0, 0.95),
        fc_dropout_drop_proba=_num(params, "fc_dropout_drop_proba", 0.0, 0.95),
        use_BN=_one_of(params, "use_BN", (False, True)),
        first_conv=_num(params, "first_conv", 1, 7, integer=True, optional=True),
        residual=_num(params, "residual", 1, 8, integer=True, optional=True),
        conv_hiddn_units_mult=_num(params, "conv_hiddn_units_mult", 0.05, 10.0),
        nb_conv_pool_layers=_num(params, "nb_conv_pool_layers", 1, 4, integer=True),
        conv_pool_res_start_idx=_num(params, "conv_pool_res_start_idx", 0, 4, integer=True),
        pooling_type=_one_of(params, "pooling_type", POOLING),
        conv_kernel_size=_num(params, "conv_kernel_size", 1, 7, integer=True),
        res_conv_kernel_size=_num(params, "res_conv_kernel_size", 1, 7, integer=True),
        fc_units_1_mult=_num(params, "fc_units_1_mult", 0.01, 10.0),
        one_more_fc=_num(params, "one_more_fc", 0.01, 10.0, optional=True),
        activation=_one_of(params, "activation", ACTIVATIONS),
    )


class _Layers:
    """The original's layer helpers for one point: width-scaled, L2-regularised convolutions, optional
    batch-norm, and its residual, pooling and inception blocks, in the order the original builds them."""

    def __init__(self, a: Arch, width_scale: float):
        from keras import layers, regularizers

        self.a = a
        self.layers = layers
        self.reg = regularizers.L2(BASE_L2 * a.l2_weight_reg_mult)
        self.width_scale = width_scale

    def conv(self, x: Any, n: int, k: int, strides: int = 1, linear: bool = False) -> Any:
        return self.layers.Conv2D(max(1, int(n * self.width_scale)), k, strides=strides, padding="same",
                                  activation=None if linear else self.a.activation, kernel_regularizer=self.reg)(x)

    def bn(self, x: Any) -> Any:
        return self.layers.BatchNormalization()(x) if self.a.use_BN else x

    def conv_pool(self, x: Any, n: int) -> Any:
        # The original's convolution_pooling: a linear stride-2 convolution, then batch-norm if use_BN.
        return self.bn(self.conv(x, n, 3, strides=2, linear=True))

    def dense(self, x: Any, units: float) -> Any:
        x = self.layers.Dense(max(1, int(units * self.width_scale)), activation=self.a.activation,
                              kernel_regularizer=self.reg)(x)
        return self.layers.Dropout(self.a.fc_dropout_drop_proba)(x)

    def residual(self, x: Any, n: int) -> Any:
        a, layers = self.a, self.layers
        for _ in range(a.residual or 0):
            shortcut = self.conv(x, n, 1, linear=True)
            branch = self.conv(layers.Dropout(a.conv_dropout_drop_proba)(x), n, a.res_conv_kernel_size)
            x = self.bn(layers.Add()([shortcut, branch]))
        # The original's residual() ends with one more batch-norm with use_BN and two without: part of its
        # architecture (it changes parameter counts), kept.
        x = layers.BatchNormalization()(x)
        return x if self.a.use_BN else layers.BatchNormalization()(x)

    def pool(self, x: Any, n: int) -> Any:
        layers, kind = self.layers, self.a.pooling_type
        if kind == "max":
            return layers.MaxPooling2D(2)(x)
        if kind == "avg":
            return layers.AveragePooling2D(2)(x)
        if kind == "all_conv":
            return self.conv_pool(x, n)
        wide, narrow = int(0.4 * n) + 1, int(0.33 * n) + 1  # inception
        b1 = self.conv_pool(x, wide)
        b2 = self.conv_pool(self.conv(self.conv(x, narrow, 1), wide, 3), wide)
        b3 = layers.MaxPooling2D(3, strides=2, padding="same")(self.conv(x, wide, 1))
        return layers.Concatenate()([b1, b2, b3])

    def block(self, x: Any, index: int, n: int) -> Any:
        """One conv-pool block: a convolution, residual units from conv_pool_res_start_idx on, pooling, dropout."""
        x = self.bn(self.conv(x, n, self.a.conv_kernel_size))
        if self.a.residual and index >= self.a.conv_pool_res_start_idx:
            x = self.residual(x, n)
        return self.layers.Dropout(self.a.conv_dropout_drop_proba)(self.pool(x, n))


def build_model(params: Mapping[str, Any], *, n_fine: int = 100, n_coarse: int = 20, jit_compile: bool | str = "auto",
                width_scale: float = 1.0, input_dtype: str = "uint8") -> Any:
    """The compiled Keras model for one point. width_scale shrinks every layer (tests use tiny models);
    input_dtype float32 takes the seed's float arrays (benchmark P6b compares the two)."""
    import keras
    from keras import layers

    from trainer.optimizers import seed_optimizer

    a = check_params(params)
    make = _Layers(a, width_scale)
    inputs = keras.Input((32, 32, 3), dtype=input_dtype, name="image")
    x = layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = layers.RandomFlip("horizontal")(x)  # active in training only
    if a.first_conv is not None:
        x = make.conv(x, 16, a.first_conv)
    n = int(40 * a.conv_hiddn_units_mult)
    for index in range(a.nb_conv_pool_layers):
        x = make.block(x, index, n)
        n *= 2
    x = make.dense(layers.Flatten()(x), 1000 * a.fc_units_1_mult)
    if a.one_more_fc is not None:
        x = make.dense(x, 750 * a.one_more_fc)
    # float32 heads: softmax and the loss stay exact under mixed precision.
    fine = layers.Dense(n_fine, activation="softmax", kernel_regularizer=make.reg, dtype="float32",
                        name="fine_outputs")(x)
    coarse = layers.Dense(n_coarse, activation="softmax", kernel_regularizer=make.reg, dtype="float32",
                          name="coarse_outputs")(x)
    model = keras.Model(inputs, {"fine_outputs": fine, "coarse_outputs": coarse}, name="cifar100_two_heads")
    model.compile(
        optimizer=seed_optimizer(a.optimizer, BASE_LR * a.lr_rate_mult),
        loss={"fine_outputs": "sparse_categorical_crossentropy", "coarse_outputs": "sparse_categorical_crossentropy"},
        loss_weights={"fine_outputs": 1.0, "coarse_outputs": a.coarse_labels_weight},
        metrics={"fine_outputs": ["accuracy"], "coarse_outputs": ["accuracy"]},
        jit_compile=jit_compile,
    )
    return model
