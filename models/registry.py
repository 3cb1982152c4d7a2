"""Registry of model builders by name; a duplicate name is an error, an unknown one lists the known."""

from __future__ import annotations

from collections.abc import Callable

BUILDERS: dict[str, Callable] = {}


def register(
    name: str,
    min_input_size: int = 0,
    max_input_size: int | None = None,
    kinds: tuple[str, ...] = ("image",),
    search: bool = False,
    text_input: str | None = None,
    cost: int = 0,
) -> Callable[[Callable], Callable]:
    """Registers a builder under `name`; `min_input_size` and `max_input_size` bound the image side the
    architecture was designed for (preprocess.image_height/width: auto resizes images up or down into them);
    `kinds` are the data kinds it takes (tfpipe/kinds.py); `search`: one of its kinds' default candidates for
    train.model: auto; `text_input`, for a text model, what it reads: "sequence" (token ids in order) or "bag" (a
    TF-IDF vector of words and word pairs); `cost`, its rank among its kind's candidates by training time (the search
    tries the cheapest first, so a time budget cuts the costliest)."""

    def decorate(builder: Callable) -> Callable:
        if name in BUILDERS:
            raise ValueError(
                f"model {name!r} is registered twice ({BUILDERS[name].__module__} and {builder.__module__})"
            )
        builder.min_input_size = min_input_size
        builder.max_input_size = max_input_size
        builder.kinds = tuple(kinds)
        builder.search = search
        builder.text_input = text_input
        builder.cost = cost
        BUILDERS[name] = builder
        return builder

    return decorate


def get_builder(name: str) -> Callable:
    _import_all()
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name]


def check_kind(name: str, kind: str) -> None:
    """A model that does not take this kind of data is an error naming the ones that do."""
    if kind not in get_builder(name).kinds:
        takers = [other for other in names() if kind in BUILDERS[other].kinds]
        raise ValueError(f"model {name!r} does not take {kind} data; models for {kind} data: {', '.join(takers)}")


def search_candidates(kind: str) -> list[str]:
    """The models train.model: auto compares for this kind by default (the schema command proposes them)."""
    found = [name for name in names() if kind in BUILDERS[name].kinds and BUILDERS[name].search]
    return sorted(found, key=lambda name: (BUILDERS[name].cost, name))


def takes_raw_pixels(name: str) -> bool:
    """True for a model that brings its own input preprocessing (a pretrained backbone): the
    dataset's normalization statistics are not applied before it."""
    return getattr(get_builder(name), "takes_raw_pixels", False)


def min_input_size(name: str) -> int:
    return get_builder(name).min_input_size


def input_size_range(names: list[str]) -> tuple[int, int | None]:
    """The image sides every one of these models was designed for: (the largest minimum, the smallest maximum)."""
    builders = [get_builder(name) for name in names]
    minimum = max(builder.min_input_size for builder in builders)
    maxima = [builder.max_input_size for builder in builders if builder.max_input_size is not None]
    return minimum, max(minimum, min(maxima)) if maxima else None


def names() -> list[str]:
    _import_all()
    return sorted(BUILDERS)


def _import_all() -> None:
    """Imports every module of the models package, which runs each architecture's @register: adding a model is
    adding its file, with no list to keep."""
    import importlib
    import pkgutil

    import models

    for module in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"models.{module.name}")
