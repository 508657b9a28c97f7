"""The variant registry's historical home: ``register_model`` and the builder helpers.

Variants are :class:`t5lab.variants.Variant` objects now, defined (and the built-ins registered) in
:mod:`t5lab.variants`; this module keeps the names user code imports::

    from t5lab.models.registry import register_model, t5_config_kwargs

    @register_model("scaled_t5", objective="seq2seq", config_class=MyConfig)
    def build(cfg, info):            # cfg: the ``model`` config section, info: BuildInfo
        return MyModel(MyConfig(**t5_config_kwargs(cfg, info)))

and trains it with ``t5lab --import my_module.py train model.variant=scaled_t5``.
"""

from __future__ import annotations

from typing import Any

from t5lab.variants import (
    _REGISTRY,
    OBJECTIVES,
    Builder,
    BuildInfo,
    ModelObjective,
    Variant,
    get_variant,
    list_variants,
    register_model,
    t5_config_kwargs,
)

VariantSpec = Variant

__all__ = [
    "OBJECTIVES",
    "_REGISTRY",
    "BuildInfo",
    "Builder",
    "ModelObjective",
    "Variant",
    "VariantSpec",
    "build_model",
    "effective_objective",
    "get_model_spec",
    "list_models",
    "option_names",
    "option_value",
    "register_model",
    "t5_config_kwargs",
]


def list_models() -> list[str]:
    """Names of every registered variant (built-ins first)."""
    return list_variants()


def get_model_spec(name: str) -> Variant:
    """The :class:`~t5lab.variants.Variant` called ``name`` (one-line ConfigError listing the known ones)."""
    return get_variant(name)


def option_names(spec: Variant) -> list[str] | None:
    """Allowed ``model.options`` keys of a variant (fields of its config class), or None for any."""
    return spec.option_names()


def option_value(spec: Variant, options: dict[str, Any], key: str, default: Any = None) -> Any:
    """An option's value: the config's, else the variant's default, else its config class's."""
    return spec.option(options, key, default)


def effective_objective(spec: Variant, options: dict[str, Any]) -> str:
    """The formulation kind a variant trains with, given its options (:meth:`Variant.kind_of`)."""
    return spec.kind_of(options)


def build_model(cfg: Any, info: BuildInfo) -> Any:
    """A fresh model, or one loaded from ``cfg.init_from`` (:meth:`t5lab.variants.Variant.build`)."""
    return get_variant(cfg.variant).build(cfg, info)
