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
