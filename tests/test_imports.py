"""t5lab's package code uses only transformers' and Lightning's public API.

Private names break without notice at a minor release (transformers 5.25 changed ``T5Stack``,
``T5Block`` and ``T5Attention`` under every subclass of them), so ``src/t5lab`` is scanned with
``ast`` for imports of transformers internals and private Lightning modules or attributes. Every
finding is reported as ``file:line: what``. Tests may use internals as references; only the package
is scanned.

Allowed from transformers: the top-level public names (``PreTrainedModel``, configs, Auto classes,
tokenizers, ``GenerationMixin``, pipelines, schedules, and full model classes such as
``T5ForConditionalGeneration`` / ``GPT2LMHeadModel`` -- not building blocks such as ``T5Stack``,
``T5Attention`` or ``T5PreTrainedModel``), ``cache_utils``' Cache classes, ``modeling_outputs``,
``activations``, ``initialization`` (a public module on 5.20 and 5.24 alike: the init functions
``_init_weights`` is meant to use), ``generation``, ``pipelines``, ``optimization``,
``transformers.utils.logging`` and, from ``modeling_utils``, ``PreTrainedModel`` only.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

# Imports still to be removed (file -> the findings below that are tolerated there for now). The
# list only shrinks and is empty since the models moved onto t5lab.models.t5core: an entry that no
# longer occurs fails test_allow_list_has_no_stale_entries. Fix a new finding; do not list it here.
ALLOWED: dict[str, set[str]] = {}

SRC = Path(__file__).resolve().parents[1] / "src" / "t5lab"

# transformers submodules with a public API, and which of their names are public (None: any name
# without a leading underscore)
PUBLIC_MODULES: dict[str, re.Pattern[str] | None] = {
    "transformers.cache_utils": re.compile(r"\w*Cache"),
    "transformers.modeling_outputs": None,
    "transformers.activations": None,
    "transformers.initialization": None,
    "transformers.generation": None,
    "transformers.pipelines": None,
    "transformers.optimization": None,
    "transformers.utils.logging": None,
    "transformers.logging": None,  # the same module, re-exported
    "transformers.modeling_utils": re.compile(r"PreTrainedModel"),
    "transformers.configuration_utils": re.compile(r"Pre[Tt]rainedConfig"),
    "transformers.models.auto": re.compile(r"Auto\w+"),
}
# a model family's building blocks, public in name only: they change with every refactor
BUILDING_BLOCK = re.compile(
    r"[A-Z]\w*(PreTrainedModel|Stack|Block|Attention|LayerNorm|Layer\w*|DenseActDense|DenseGatedActDense|MLP|Embeddings)"
)
# a family's modeling / configuration module: transformers.models.t5.modeling_t5 and the like
FAMILY_MODULE = re.compile(r"transformers\.models\.\w+(\.(modeling|configuration|tokenization)_\w+)?")
LIGHTNING_ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")
# Lightning's private state, reached through public objects (self.trainer, trainer.fit_loop, ...)
LIGHTNING_PRIVATE_ATTRS = {
    "_trainer",
    "_logger_connector",
    "_batches_that_stepped",
    "should_update_logs",
    "_active_loop",
    "_results",
    "_should_accumulate",
    "_accelerator_connector",
    "_checkpoint_connector",
    "_data_connector",
    "_callback_connector",
    "_signal_connector",
    "_current_fx_name",
    "_fabric",
}


def transformers_problem(dotted: str) -> str | None:
    """Why importing ``dotted`` (``module.name`` or a module) from transformers is not public API, or None."""
    parts = dotted.split(".")
    if parts[0] != "transformers":
        return None
    if any(p.startswith("_") for p in parts):
        return "a private name"
    if len(parts) == 1:
        return None
    if len(parts) == 2:  # from transformers import X / import transformers.X
        name = parts[1]
        if name in {"models", "utils"} or dotted in PUBLIC_MODULES:
            return None  # a package / public module as such; what is taken from it is checked
        if BUILDING_BLOCK.fullmatch(name) and name != "PreTrainedModel":
            return "a model's building block (build on t5lab.models.t5core instead)"
        if _is_module(dotted):
            return "an internal module"
        return None
    module, name = ".".join(parts[:-1]), parts[-1]
    for public, names in PUBLIC_MODULES.items():
        if module == public:
            if names is None or names.fullmatch(name):
                return None
            return f"not public in {public}"
        if dotted == public or module.startswith(public + "."):
            return None  # the module itself, or an attribute of what it exports
    if FAMILY_MODULE.fullmatch(module) or FAMILY_MODULE.fullmatch(dotted):
        if FAMILY_MODULE.fullmatch(dotted):
            return None  # import of the family module itself: what is used from it is not seen here
        if BUILDING_BLOCK.fullmatch(name):
            return "a model's internals (build on t5lab.models.t5core instead)"
        return None  # configs, tokenizers and full models (T5ForConditionalGeneration, ...)
    if module == "transformers.utils" and name == "logging":
        return None
    return "an internal module"


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def lightning_problem(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] not in LIGHTNING_ROOTS:
        return None
    return "a private Lightning module or name" if any(p.startswith("_") for p in parts) else None


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(names)])


def findings(source: str) -> list[tuple[int, str, str]]:
    """(line, what, why) for every non-public import or private Lightning attribute in ``source``."""
    tree = ast.parse(source)
    found: list[tuple[int, str, str]] = []
    modules: dict[str, str] = {}  # local name -> transformers / Lightning module it is bound to

    def check(line: int, dotted: str) -> None:
        why = transformers_problem(dotted) or lightning_problem(dotted)
        if why:
            found.append((line, dotted, why))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(node.lineno, alias.name)
                local = alias.asname or alias.name.split(".")[0]
                modules[local] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                check(node.lineno, f"{node.module}.{alias.name}")
                if alias.name[:1].islower():  # a submodule (or a function): attributes taken from it are checked
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in LIGHTNING_PRIVATE_ATTRS:
                found.append((node.lineno, f".{node.attr}", "private Lightning state"))
            dotted = _dotted(node)
            root = dotted.split(".")[0] if dotted else None
            if root in modules and isinstance(node.ctx, ast.Load):
                parts = (modules[root] + dotted[len(root) :]).split(".")
                # what follows a class (transformers.AutoConfig.from_pretrained) is its own API
                first_class = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
                check(node.lineno, ".".join(parts[: first_class + 1]))
        elif isinstance(node, ast.Call):
            func = _dotted(node.func) or ""
            strings = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if func.split(".")[-1] in {"getattr", "hasattr", "setattr"} and strings:
                if strings[0] in LIGHTNING_PRIVATE_ATTRS:
                    found.append((node.lineno, f".{strings[0]}", "private Lightning state"))
            if func.split(".")[-1] == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                check(node.lineno, str(node.args[0].value))
    return sorted(set(found))


def scan() -> dict[str, list[tuple[int, str, str]]]:
    result = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if found := findings(path.read_text()):
            result[rel] = found
    return result


def test_package_imports_only_public_api():
    offending = [
        f"src/t5lab/{rel}:{line}: {what} ({why})"
        for rel, found in scan().items()
        for line, what, why in found
        if what not in ALLOWED.get(rel, set())
    ]
    assert not offending, "non-public transformers / Lightning API:\n" + "\n".join(offending)


def test_allow_list_has_no_stale_entries():
    present = {rel: {what for _, what, _ in found} for rel, found in scan().items()}
    stale = [f"{rel}: {what}" for rel, whats in ALLOWED.items() for what in sorted(whats - present.get(rel, set()))]
    assert not stale, "remove from ALLOWED in tests/test_imports.py (no longer imported):\n" + "\n".join(stale)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from transformers.models.t5.modeling_t5 import T5Stack", ["transformers.models.t5.modeling_t5.T5Stack"]),
        ("from transformers.models.t5.modeling_t5 import T5PreTrainedModel as P", ["transformers.models.t5.modeling_t5.T5PreTrainedModel"]),
        ("from transformers import T5PreTrainedModel", ["transformers.T5PreTrainedModel"]),
        ("from transformers.masking_utils import create_causal_mask", ["transformers.masking_utils.create_causal_mask"]),
        ("from transformers.modeling_utils import slice_logits_to_keep", ["transformers.modeling_utils.slice_logits_to_keep"]),
        ("from transformers.utils.generic import can_return_tuple", ["transformers.utils.generic.can_return_tuple"]),
        ("from transformers.utils import DUMMY_INPUTS", ["transformers.utils.DUMMY_INPUTS"]),
        ("from transformers.cache_utils import DynamicLayer", ["transformers.cache_utils.DynamicLayer"]),
        ("from transformers import _private", ["transformers._private"]),
        ("import transformers\nx = transformers.models.t5.modeling_t5.T5Block", ["transformers.models.t5.modeling_t5.T5Block"]),
        ("import transformers.masking_utils", ["transformers.masking_utils"]),
        ("from transformers import masking_utils\nm = masking_utils.create_causal_mask",
         ["transformers.masking_utils", "transformers.masking_utils.create_causal_mask"]),
        ("import importlib\nimportlib.import_module('transformers.masking_utils')", ["transformers.masking_utils"]),
        ("from lightning.pytorch.trainer.connectors._x import y", ["lightning.pytorch.trainer.connectors._x.y"]),
        ("from lightning.pytorch.loops import _FitLoop", ["lightning.pytorch.loops._FitLoop"]),
        ("t = self._trainer", ["._trainer"]),
        ("self.trainer.fit_loop.epoch_loop._batches_that_stepped = 1", ["._batches_that_stepped"]),
        ("ok = self.trainer._logger_connector.should_update_logs", ["._logger_connector", ".should_update_logs"]),
        ("c = getattr(trainer, '_logger_connector', None)", ["._logger_connector"]),
        # public API: nothing to report
        ("from transformers import PreTrainedModel, T5Config, T5ForConditionalGeneration, GPT2LMHeadModel", []),
        ("from transformers import AutoModelForCausalLM, GenerationMixin, ByT5Tokenizer, get_linear_schedule_with_warmup", []),
        ("from transformers import initialization as init\nfrom transformers.activations import ACT2FN", []),
        ("from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache, StaticCache", []),
        ("from transformers.modeling_outputs import Seq2SeqLMOutput\nfrom transformers.generation import GenerationMixin", []),
        ("from transformers.modeling_utils import PreTrainedModel\nfrom transformers.utils import logging", []),
        ("from transformers.models.t5.modeling_t5 import T5ForConditionalGeneration", []),
        ("from transformers.optimization import Adafactor", []),
        ("import lightning.pytorch as pl\nfrom lightning.pytorch.loggers.logger import Logger, rank_zero_experiment", []),
        ("rank = self.global_rank\nstep = self.trainer.global_step", []),
        ("from transformers import T5Config\nc = T5Config.from_dict({})", []),
        ("from transformers.utils import logging as hf\nhf.set_verbosity_error()", []),
        ("import transformers\ntransformers.logging.set_verbosity_error()\ntransformers.AutoConfig.from_pretrained('x')", []),
    ],
)
def test_findings_closed_form(source, expected):
    assert [what for _, what, _ in findings(source)] == expected
