import pytest

from settings import TrainConfig, UserError, parse_args


def test_defaults_and_literal_overrides():
    cfg = parse_args(["--learning_rate=3e-4", "--eval_steps=[10, 20]", "--mlp_hidden=None", "--compile=True"])
    assert cfg.learning_rate == 3e-4
    assert cfg.eval_steps == [10, 20]
    assert cfg.mlp_hidden is None
    assert cfg.compile is True
    assert cfg.lr_decay_iters == cfg.max_iters


def test_unquoted_string_and_int_for_float():
    cfg = parse_args(["--device=cpu", "--mlp=swiglu", "--learning_rate=1"])
    assert cfg.device == "cpu"
    assert cfg.mlp == "swiglu"
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)


def test_config_files_apply_in_order():
    cfg = parse_args(["config/dynactglu.py", "config/cpu.py", "--seed=7"])
    assert cfg.mlp == "dynactglu"
    assert cfg.n_embd == 128  # from the CPU overlay
    assert cfg.dropout == 0.0
    assert cfg.out_dir == "out/cpu/dynactglu-s7"


def test_variant_configs_differ_only_in_mlp():
    configs = {v: parse_args([f"config/{v}.py"]).to_dict() for v in ("gelu", "swiglu", "geglu", "dynactglu")}
    for v, values in configs.items():
        assert values["mlp"] == v
        differing = {k for k in values if values[k] != configs["swiglu"][k]}
        assert differing <= {"mlp", "out_dir", "wandb_run_name"}, (v, differing)
    paper = configs["dynactglu"]
    assert (paper["n_layer"], paper["n_head"], paper["n_embd"], paper["block_size"]) == (6, 6, 384, 256)
    assert (paper["batch_size"] * paper["gradient_accumulation_steps"], paper["dropout"]) == (64, 0.2)
    assert paper["max_iters"] == 34300
    assert paper["eval_steps"] == [5620, 34300]


def test_unknown_key_suggests_closest():
    with pytest.raises(UserError, match="unknown setting 'lerning_rate'.*did you mean 'learning_rate'"):
        parse_args(["--lerning_rate=1e-3"])


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("n_layers = 4\n")
    with pytest.raises(UserError, match="unknown setting 'n_layers'.*did you mean 'n_layer'"):
        parse_args([str(path)])


@pytest.mark.parametrize("arg, match", [
    ("--n_layer=2.5", "'n_layer' expects int"),
    ("--n_layer=True", "'n_layer' expects an int"),
    ("--compile=1", "'compile' expects True or False"),
    ("--eval_steps=5", "'eval_steps' expects a list"),
    ("--learning_rate=fast", "cannot parse 'fast'"),
    ("--mlp=3", "'mlp' expects str"),
])
def test_wrong_type_is_rejected(arg, match):
    with pytest.raises(UserError, match=match):
        parse_args([arg])


@pytest.mark.parametrize("args, match", [
    (["--mlp=relu"], "mlp='relu' is not valid; use one of gelu, swiglu, geglu, dynactglu"),
    (["--n_embd=100", "--n_head=6"], "not divisible by n_head"),
    (["--max_iters=100", "--eval_steps=[50, 200]"], r"eval_steps \[200\]"),
    (["--batch_size=0"], "batch_size=0 must be positive"),
    (["--learning_rate=-1.0"], "learning_rate=-1.0 must be positive"),
    (["--out_dir=out/{nope}"], "invalid placeholder"),
    (["--n_layer"], "has no value"),
])
def test_invalid_values_are_rejected(args, match):
    with pytest.raises(UserError, match=match):
        parse_args(args)


def test_missing_config_file():
    with pytest.raises(UserError, match="config file 'config/nope.py' not found"):
        parse_args(["config/nope.py"])


def test_every_field_has_a_default():
    TrainConfig()


DATASET_CONFIGS = {"tinystories": "tinystories", "owt_124m": "openwebtext"}
VARIANTS = ("gelu", "swiglu", "geglu", "dynactglu")


@pytest.mark.parametrize("config", sorted(DATASET_CONFIGS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_dataset_config_composes_with_variant(config, variant):
    composed = parse_args([f"config/{variant}.py", f"config/{config}.py"])
    alone = parse_args([f"config/{config}.py", f"--mlp={variant}"])
    assert composed.mlp == variant
    assert composed.dataset == DATASET_CONFIGS[config]
    # Nothing from the Tiny Shakespeare setup that the variant file imports survives.
    assert composed.to_dict() == alone.to_dict()


@pytest.mark.parametrize("config", sorted(DATASET_CONFIGS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_dataset_config_before_variant_fails(config, variant):
    with pytest.raises(UserError) as error:
        parse_args([f"config/{config}.py", f"config/{variant}.py"])
    message = str(error.value)
    assert f"config file 'config/{variant}.py' resets dataset='{DATASET_CONFIGS[config]}'" in message
    assert f"put the dataset config last: config/{variant}.py config/{config}.py" in message


def test_owt_124m_is_gpt2_small_schedule():
    cfg = parse_args(["config/dynactglu.py", "config/owt_124m.py"])
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (12, 12, 768, 1024)
    assert cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size == 491_520
    assert (cfg.learning_rate, cfg.min_lr, cfg.beta2) == (6e-4, 6e-5, 0.95)
    assert (cfg.warmup_iters, cfg.max_iters, cfg.lr_decay_iters) == (2000, 600_000, 600_000)


def test_tinystories_sizes():
    cfg = parse_args(["config/swiglu.py", "config/tinystories.py"])
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (8, 8, 512, 512)
    assert cfg.eval_tokens // cfg.block_size == 2048


def test_later_dataset_assignment_wins():
    cfg = parse_args(["config/tinystories.py", "config/owt_124m.py"])
    assert cfg.dataset == "openwebtext"
    cfg = parse_args(["config/shakespeare_char.py", "config/dynactglu.py"])
    assert cfg.dataset == "shakespeare_char"
