"""Training settings: defaults, config files and --key=value overrides.

A config file is plain Python that assigns settings (`learning_rate = 1e-3`). Names starting with an
underscore, modules, functions and classes in it are ignored, so a file may import another config with
`from config.shakespeare_char import *`. Files apply in order, then `--key=value` overrides; a value is
parsed as a Python literal, and for text settings an unquoted word is taken as a string.

Dataset configs go last: a file that only inherits `dataset` through an import (a variant file such as
config/dynactglu.py imports the whole Tiny Shakespeare setup) must not replace a dataset that an earlier
file assigned itself, because it would silently reset the model and schedule too. parse_args raises
UserError for that order and names the right one.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import os
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields

import model


class UserError(Exception):
    """A mistake in the user's input; entry points print it as one `error: ...` line, with no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors raise UserError, so they print as one line."""

    def error(self, message: str) -> None:
        raise UserError(f"{message}; run `{self.prog} --help` for the options")


def report_user_error(error: Exception, exit_code: int) -> None:
    """Print `error: ...` as one line on stderr and exit; DYNACT_DEBUG=1 re-raises to show the traceback."""
    if os.environ.get("DYNACT_DEBUG"):
        raise error
    message = " ".join(str(error).splitlines())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out/{mlp}-s{seed}"  # {key} placeholders are filled from the final settings
    init_from: str = "scratch"  # "scratch" or "resume" (continue from out_dir/ckpt.pt)
    overwrite: bool = False  # allow a run from scratch to replace the checkpoints already in out_dir
    eval_interval: int = 0  # also evaluate every this many steps; 0: only at eval_steps and the end
    eval_steps: list[int] = field(default_factory=list)  # fixed steps that are evaluated and keep a checkpoint
    eval_tokens: int = 0  # evaluate on the first this many val tokens; 0: the whole val split
    log_interval: int = 10
    checkpoint_interval: int = 0  # also write ckpt.pt every this many steps; 0: only at evaluations
    keep_last: int = 0  # keep this many ckpt_periodic_*.pt copies of periodic checkpoints; 0: none
    # data
    dataset: str = "shakespeare_char"  # a folder under data/ written by data/prepare.py
    data_root: str = ""  # folder that contains the dataset folders; empty: data/ beside train.py
    batch_size: int = 64  # sequences per micro-step and process
    block_size: int = 256
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step, summed over all processes
    # model
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False
    mlp: str = "dynactglu"
    mlp_hidden: typing.Optional[int] = None
    dynact_base: str = "silu"
    dynact_alpha_init: float = 1.0
    dynact_beta_init: float = 0.0
    # optimizer
    learning_rate: float = 1e-3
    max_iters: int = 5000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    # learning-rate schedule: linear warmup, then cosine decay to min_lr at lr_decay_iters
    warmup_iters: int = 100
    lr_decay_iters: typing.Optional[int] = None  # None: max_iters
    min_lr: float = 1e-4
    # system
    seed: int = 1337
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto, float32, bfloat16 or float16
    compile: bool = False
    peak_flops: float = 0.0  # FLOP/s that MFU is relative to; 0: a known GPU's peak, else a measured matmul
    # logging
    wandb_log: bool = False
    wandb_project: str = "dynactglu"
    wandb_run_name: str = "{mlp}-s{seed}"

    def model_config(self, vocab_size: int) -> model.GPTConfig:
        return model.GPTConfig(
            block_size=self.block_size,
            vocab_size=vocab_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
            mlp=self.mlp,
            mlp_hidden=self.mlp_hidden,
            dynact_base=self.dynact_base,
            dynact_alpha_init=self.dynact_alpha_init,
            dynact_beta_init=self.dynact_beta_init,
        )

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {
    "init_from": ("scratch", "resume"),
    "mlp": model.MLP_TYPES,
    "dynact_base": tuple(model.DYNACT_BASES),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
}
POSITIVE = (
    "batch_size", "block_size", "gradient_accumulation_steps", "n_layer", "n_head", "n_embd", "max_iters", "log_interval",
)
NON_NEGATIVE = (
    "eval_interval", "eval_tokens", "checkpoint_interval", "keep_last", "warmup_iters",
    "weight_decay", "grad_clip", "min_lr", "peak_flops",
)


def field_types() -> dict[str, object]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def closest_key_hint(key: str) -> str:
    match = difflib.get_close_matches(key, [f.name for f in fields(TrainConfig)], n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else "run `python train.py --help` to list the settings"


def check_type(key: str, value: object, expected: object) -> object:
    """Return value converted to the expected type (an int is accepted for a float), or raise UserError."""
    origin = typing.get_origin(expected)
    if origin is typing.Union:
        args = typing.get_args(expected)
        if value is None and type(None) in args:
            return None
        inner = next(a for a in args if a is not type(None))
        return check_type(key, value, inner)
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, (list, tuple)):
            raise UserError(
                f"setting '{key}' expects a list of {item_type.__name__}, got {value!r}; write it as --{key}=[1, 2]"
            )
        return [check_type(key, item, item_type) for item in value]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise UserError(f"setting '{key}' expects True or False, got {value!r}; write --{key}=True or --{key}=False")
    if expected is int and isinstance(value, bool):
        raise UserError(f"setting '{key}' expects an int, got {value!r}; write a whole number")
    if not isinstance(value, expected):
        raise UserError(
            f"setting '{key}' expects {expected.__name__}, got {type(value).__name__} {value!r}; "
            f"pass a value of type {expected.__name__}"
        )
    return value


def parse_value(key: str, text: str, expected: object) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if expected is str:
            return text  # lets users write --device=cpu without quotes
        raise UserError(f"setting '{key}': cannot parse {text!r} as a Python literal; {literal_hint(key, expected)}")


def literal_hint(key: str, expected: object) -> str:
    """Return an example of a valid --key=value for a setting of the expected type."""
    inner = [a for a in typing.get_args(expected) if a is not type(None)]
    kind = inner[0] if typing.get_origin(expected) is typing.Union and inner else expected
    if kind is int:
        return f"write a whole number, e.g. --{key}=100"
    if kind is float:
        return f"write a number, e.g. --{key}=3e-4"
    if kind is bool:
        return f"write --{key}=True or --{key}=False"
    if typing.get_origin(kind) is list:
        return f"write a list, e.g. --{key}=[100, 200]"
    return f"quote text, e.g. --{key}='...'"


def read_config_file(path: str) -> dict[str, object]:
    """Execute a config file and return the settings it assigns."""
    source = read_config_source(path)
    namespace: dict[str, object] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    repo_root = os.path.dirname(os.path.abspath(__file__))
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    exec(compile(source, path, "exec"), namespace)
    skip = (types.ModuleType, types.FunctionType, type)
    return {
        k: v for k, v in namespace.items() if not k.startswith("_") and not isinstance(v, skip)
    }


def read_config_source(path: str) -> str:
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} not found; pass a path such as config/dynactglu.py")
    with open(path, encoding="utf-8") as f:
        return f.read()


def assigns_name(path: str, name: str) -> bool:
    """Return whether a config file assigns `name` itself, rather than only importing it."""
    tree = ast.parse(read_config_source(path), filename=path)
    return any(
        isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store) for node in ast.walk(tree)
    )


def check_dataset_order(path: str, file_values: dict[str, object], dataset_origin: tuple[str, object] | None) -> None:
    """Raise UserError when a config file's inherited dataset would replace one an earlier file set itself."""
    if dataset_origin is None or "dataset" not in file_values:
        return
    origin_path, origin_value = dataset_origin
    if file_values["dataset"] == origin_value or assigns_name(path, "dataset"):
        return
    raise UserError(
        f"config file {path!r} resets dataset={origin_value!r} from {origin_path!r} to {file_values['dataset']!r} "
        f"(with the rest of its imported setup); put the dataset config last: {path} {origin_path}"
    )


def setting_type(key: str, where: str) -> object:
    """Return the type of setting `key`, or raise UserError naming the closest valid key."""
    types_by_key = field_types()
    if key not in types_by_key:
        raise UserError(f"unknown setting '{key}' in {where}; {closest_key_hint(key)}")
    return types_by_key[key]


def apply_setting(values: dict[str, object], key: str, value: object, where: str) -> None:
    values[key] = check_type(key, value, setting_type(key, where))


def validate(cfg: TrainConfig) -> None:
    """Raise UserError for settings that cannot work together."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r} is not valid; use one of {', '.join(allowed)}")
    for key in POSITIVE:
        if getattr(cfg, key) <= 0:
            raise UserError(f"{key}={getattr(cfg, key)} must be positive; pass a value above 0")
    for key in NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise UserError(f"{key}={getattr(cfg, key)} must be >= 0; pass 0 or a positive value")
    if cfg.learning_rate <= 0:
        raise UserError(f"learning_rate={cfg.learning_rate} must be positive; pass a value such as 1e-3")
    if cfg.min_lr > cfg.learning_rate:
        raise UserError(f"min_lr={cfg.min_lr} is above learning_rate={cfg.learning_rate}; lower min_lr")
    if cfg.n_embd % cfg.n_head != 0:
        raise UserError(f"n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}; choose a multiple of n_head")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"dropout={cfg.dropout} must be in [0, 1); pass a value such as 0.1")
    late = [s for s in cfg.eval_steps if s > cfg.max_iters or s < 0]
    if late:
        raise UserError(
            f"eval_steps {late} lie outside 0..max_iters={cfg.max_iters}; raise max_iters or drop those steps"
        )
    if cfg.lr_decay_iters is not None and cfg.lr_decay_iters < 0:
        raise UserError(f"lr_decay_iters={cfg.lr_decay_iters} must be >= 0; pass None to decay until max_iters")
    if cfg.mlp_hidden is not None and cfg.mlp_hidden <= 0:
        raise UserError(f"mlp_hidden={cfg.mlp_hidden} must be positive; pass None for the default width")


def fill_placeholders(cfg: TrainConfig) -> None:
    values = cfg.to_dict()
    for key in ("out_dir", "wandb_run_name"):
        try:
            setattr(cfg, key, getattr(cfg, key).format(**values))
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(f"{key}={getattr(cfg, key)!r} has an invalid placeholder ({e}); use names of settings, e.g. {{mlp}}")


def parse_args(argv: list[str]) -> TrainConfig:
    """Build the settings from config files and --key=value arguments, in the order given."""
    values: dict[str, object] = {}
    # The config file that last assigned dataset itself, and the value.
    dataset_origin: tuple[str, object] | None = None
    for arg in argv:
        if arg.startswith("--"):
            key, sep, text = arg[2:].partition("=")
            if not sep:
                raise UserError(f"argument {arg!r} has no value; write --{key}=VALUE")
            expected = setting_type(key, repr(arg))
            apply_setting(values, key, parse_value(key, text, expected), repr(arg))
        else:
            file_values = read_config_file(arg)
            check_dataset_order(arg, file_values, dataset_origin)
            for key, value in file_values.items():
                apply_setting(values, key, value, f"config file {arg!r}")
            if "dataset" in file_values and assigns_name(arg, "dataset"):
                dataset_origin = (arg, file_values["dataset"])
    cfg = TrainConfig(**values)
    if cfg.lr_decay_iters is None:
        cfg.lr_decay_iters = cfg.max_iters
    validate(cfg)
    fill_placeholders(cfg)
    return cfg


def setting_comments() -> dict[str, str]:
    """Return the trailing comment of each TrainConfig field, read from this file's source."""
    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        name, colon, rest = line.strip().partition(":")
        if colon and "  # " in rest and name.isidentifier():
            comments[name] = rest.split("  # ", 1)[1].strip()
    return comments


def help_text() -> str:
    lines = ["usage: train.py [config files ...] [--key=value ...]", "", "settings (default):"]
    comments = setting_comments()
    for f in fields(TrainConfig):
        default = f.default_factory() if callable(f.default_factory) else f.default
        entry = f"  --{f.name}={default!r}"
        if f.name in comments:
            entry = f"{entry:<44} {comments[f.name]}"
        lines.append(entry)
    return "\n".join(lines)
