"""Registry of model builders by name; a duplicate name is an error, an unknown one lists the known."""

from __future__ import annotations

from collections.abc import Callable

BUILDERS: dict[str, Callable] = {}


def register(name: str, min_input_size: int = 0) -> Callable[[Callable], Callable]:
    """Registers a builder under `name`; `min_input_size` is the smallest image side the architecture was
    designed for (preprocess.image_height/width: auto resize smaller images up to it)."""

    def decorate(builder: Callable) -> Callable:
        if name in BUILDERS:
            raise ValueError(
                f"model {name!r} is registered twice ({BUILDERS[name].__module__} and {builder.__module__})"
            )
        builder.min_input_size = min_input_size
        BUILDERS[name] = builder
        return builder

    return decorate


def get_builder(name: str) -> Callable:
    _import_all()
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name]


def takes_raw_pixels(name: str) -> bool:
    """True for a model that brings its own input preprocessing (a pretrained backbone): the
    dataset's normalization statistics are not applied before it."""
    return getattr(get_builder(name), "takes_raw_pixels", False)


def min_input_size(name: str) -> int:
    return get_builder(name).min_input_size


def names() -> list[str]:
    _import_all()
    return sorted(BUILDERS)


def _import_all() -> None:
    # Importing each architecture module runs its @register decorator.
    from models import applications, lenet5, lenet5_s2d, mlp, resnet18, vgg13  # noqa: F401
