"""Property tests of the --key=value parser: literals of the right type round-trip, others are rejected."""

import re

from hypothesis import given, settings as hypothesis_settings, strategies as st

from settings import UserError, parse_args

ERROR_FORMAT = re.compile(r"^[^\n]+; [^\n]+$")  # what is wrong, then what to do, on one line

ints = st.integers(min_value=1, max_value=10**9)
floats = st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=ints)
def test_int_literals_round_trip(value):
    assert parse_args([f"--batch_size={value!r}"]).batch_size == value


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=floats)
def test_float_literals_round_trip(value):
    cfg = parse_args([f"--learning_rate={value!r}", "--min_lr=0.0"])
    assert cfg.learning_rate == value


@hypothesis_settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.integers(min_value=0, max_value=5000), max_size=5))
def test_list_literals_round_trip(steps):
    assert parse_args([f"--eval_steps={steps!r}"]).eval_steps == steps


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=texts)
def test_quoted_strings_round_trip(value):
    assert parse_args([f"--wandb_project={value!r}"]).wandb_project == value


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=st.booleans())
def test_bool_literals_round_trip(value):
    assert parse_args([f"--compile={value!r}"]).compile is value


@hypothesis_settings(max_examples=80, deadline=None)
@given(text=texts)
def test_non_int_text_is_rejected_for_int(text):
    try:
        value = int(text.strip(), 10) if text.strip().lstrip("+-").isdigit() else None
    except ValueError:
        value = None
    try:
        cfg = parse_args([f"--n_layer={text}"])
    except UserError as e:
        message = str(e)
        assert ERROR_FORMAT.match(message), message
        assert "n_layer" in message
        return
    # only text that Python reads as a positive int literal is accepted
    assert isinstance(cfg.n_layer, int) and not isinstance(cfg.n_layer, bool)
    assert cfg.n_layer > 0
    if value is not None:
        assert cfg.n_layer == value


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.booleans(), st.text(max_size=5).map(repr), st.lists(ints).map(repr), floats.filter(lambda f: f != int(f))))
def test_wrong_types_are_rejected(value):
    try:
        parse_args([f"--n_head={value}"])
    except UserError as e:
        assert "n_head" in str(e)
        assert ERROR_FORMAT.match(str(e)), str(e)
    else:
        raise AssertionError(f"--n_head={value} was accepted")
