"""Correctness of the fast paths: the fused dynActivation, the KV cache, top-p sampling and bench.py."""

import json
import shutil

import pytest
import torch

import bench
from model import (
    DYNACT_BASES, GPT, DynActivation, GLUMLP, GPTConfig, SiLUDynActFunction, SiLUDynActGLUFunction, context_start,
    top_p_filter,
)

SCALARS = [(1.0, 0.0), (0.7, -0.3), (-1.2, 0.8), (0.5, 0.5)]


def small_config(**overrides) -> GPTConfig:
    values = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    values.update(overrides)
    return GPTConfig(**values)


def activation_grads(act: DynActivation, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    """Run act forward and backward, and return the output and the gradients of x, alpha and beta."""
    x = x.detach().requires_grad_()
    act.zero_grad(set_to_none=True)
    y = act(x)
    y.backward(grad)
    return [y.detach(), x.grad, act.alpha.grad, act.beta.grad]


def set_scalars(act: DynActivation, alpha: float, beta: float) -> None:
    with torch.no_grad():
        act.alpha.fill_(alpha)
        act.beta.fill_(beta)


@pytest.mark.parametrize("alpha, beta", SCALARS)
def test_fused_gradcheck_float64(alpha, beta):
    torch.manual_seed(0)
    x = 3 * torch.randn(6, 7, dtype=torch.float64)
    inputs = (
        x.requires_grad_(),
        torch.tensor(alpha, dtype=torch.float64, requires_grad=True),
        torch.tensor(beta, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(SiLUDynActFunction.apply, inputs)


@pytest.mark.parametrize("alpha, beta", SCALARS)
def test_fused_matches_reference_float32(alpha, beta):
    torch.manual_seed(1)
    act = DynActivation("silu")
    set_scalars(act, alpha, beta)
    x = 3 * torch.randn(48, 96)
    grad = torch.randn(48, 96)
    fused = activation_grads(act, x, grad)
    act.use_reference = True
    reference = activation_grads(act, x, grad)
    for name, got, expected in zip(("output", "x grad", "alpha grad", "beta grad"), fused, reference):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=name)


def test_fused_only_for_silu_base():
    x = torch.randn(4, 5, requires_grad=True)
    for base in DYNACT_BASES:
        act = DynActivation(base, alpha_init=0.8, beta_init=0.1)
        uses_fused = "SiLUDynAct" in type(act(x).grad_fn).__name__
        assert uses_fused == (base == "silu"), base
        expected = DYNACT_BASES[base](x) * (0.8 - 0.1) + 0.1 * x
        torch.testing.assert_close(act(x), expected)


@pytest.mark.parametrize("alpha, beta", SCALARS)
def test_fused_glu_gradcheck_float64(alpha, beta):
    torch.manual_seed(6)
    inputs = (
        (3 * torch.randn(5, 7, dtype=torch.float64)).requires_grad_(),
        torch.randn(5, 7, dtype=torch.float64, requires_grad=True),
        torch.tensor(alpha, dtype=torch.float64, requires_grad=True),
        torch.tensor(beta, dtype=torch.float64, requires_grad=True),
    )
    # gradcheck runs backward several times on one graph, so the saved tensors must stay intact
    assert torch.autograd.gradcheck(lambda *args: SiLUDynActGLUFunction.apply(*args, False), inputs)


def gate_grads(act: DynActivation, g: torch.Tensor, u: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    """Run act.gate forward and backward, and return the output and the gradients of g, u, alpha and beta."""
    g = g.detach().requires_grad_()
    u = u.detach().requires_grad_()
    act.zero_grad(set_to_none=True)
    h = act.gate(g, u)
    h.backward(grad)
    return [h.detach(), g.grad, u.grad, act.alpha.grad, act.beta.grad]


@pytest.mark.parametrize("alpha, beta", SCALARS)
def test_fused_glu_matches_reference_float32(alpha, beta):
    torch.manual_seed(7)
    act = DynActivation("silu")
    set_scalars(act, alpha, beta)
    g, u, grad = 3 * torch.randn(48, 96), torch.randn(48, 96), torch.randn(48, 96)
    fused = gate_grads(act, g, u, grad)
    act.use_reference = True
    reference = gate_grads(act, g, u, grad)
    names = ("output", "g grad", "u grad", "alpha grad", "beta grad")
    for name, got, expected in zip(names, fused, reference):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=name)


def test_fused_glu_second_backward():
    act = DynActivation("silu", alpha_init=0.9, beta_init=0.2)
    g = torch.randn(6, 5, requires_grad=True)
    u = torch.randn(6, 5, requires_grad=True)
    h = act.gate(g, u).sum()
    h.backward(retain_graph=True)
    # the first backward wrote the gradient of u into a saved buffer, which PyTorch detects
    with pytest.raises(RuntimeError, match="inplace operation"):
        h.backward()
    act.overwrite_saved = False
    g.grad = None
    h = act.gate(g, u).sum()
    h.backward(retain_graph=True)
    first = g.grad.clone()
    h.backward()
    torch.testing.assert_close(g.grad, 2 * first)


def test_glu_uses_fused_gate_only_for_silu_base():
    x = torch.randn(4, 32)
    for base in DYNACT_BASES:
        mlp = GLUMLP(small_config(mlp="dynactglu", dynact_base=base, dynact_alpha_init=0.8, dynact_beta_init=0.1))
        names = []
        mlp.w_down.register_forward_pre_hook(lambda module, args: names.append(type(args[0].grad_fn).__name__))
        got = mlp(x)
        assert ("SiLUDynActGLU" in names[0]) == (base == "silu"), base
        g, u = mlp.w_gate(x), mlp.w_up(x)
        expected = mlp.w_down((DYNACT_BASES[base](g) * (0.8 - 0.1) + 0.1 * g) * u)
        torch.testing.assert_close(got, expected, msg=base)


def test_fused_glu_frozen_scalars():
    act = DynActivation("silu", alpha_init=1.3, beta_init=0.2).requires_grad_(False)
    g = torch.randn(8, 9, requires_grad=True)
    u = torch.randn(8, 9, requires_grad=True)
    act.gate(g, u).sum().backward()
    expected_g = g.detach().requires_grad_()
    expected_u = u.detach().requires_grad_()
    act.use_reference = True
    act.gate(expected_g, expected_u).sum().backward()
    torch.testing.assert_close(g.grad, expected_g.grad)
    torch.testing.assert_close(u.grad, expected_u.grad)


def test_fused_without_scalar_grads():
    act = DynActivation("silu", alpha_init=1.3, beta_init=0.2).requires_grad_(False)
    x = torch.randn(8, 9, requires_grad=True)
    act(x).sum().backward()
    expected_x = x.detach().requires_grad_()
    act.use_reference = True
    act(expected_x).sum().backward()
    torch.testing.assert_close(x.grad, expected_x.grad)


def test_bf16_autocast_runs():
    torch.manual_seed(2)
    mlp = GLUMLP(small_config(mlp="dynactglu", dynact_alpha_init=1.1, dynact_beta_init=0.2))
    x = torch.randn(64, 32)
    expected = mlp(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mlp(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=0.05, atol=0.01)
    y.float().sum().backward()
    for p in (mlp.act.alpha, mlp.act.beta):
        assert p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_fullgraph_matches_eager():
    torch.manual_seed(3)
    mlp = GLUMLP(small_config(mlp="dynactglu", dynact_alpha_init=1.2, dynact_beta_init=0.3))
    x = torch.randn(8, 32)
    # fullgraph=True raises on any graph break
    compiled = torch.compile(mlp, fullgraph=True)
    compiled(x).square().sum().backward()
    got = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad(set_to_none=True)
    mlp(x).square().sum().backward()
    for name, g, p in zip([n for n, _ in mlp.named_parameters()], got, mlp.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def mlp_saved_bytes(mlp: GLUMLP, x: torch.Tensor) -> int:
    return bench.saved_tensor_bytes(lambda: mlp(x), list(mlp.parameters()))


def test_saved_bytes_fused_equal_swiglu():
    x = torch.randn(64, 32, requires_grad=True)
    swiglu = mlp_saved_bytes(GLUMLP(small_config(mlp="swiglu")), x)
    dynact = GLUMLP(small_config(mlp="dynactglu"))
    fused = mlp_saved_bytes(dynact, x)
    dynact.act.use_reference = True
    reference = mlp_saved_bytes(dynact, x)
    assert fused == swiglu
    # the formula saves silu(x) and f(x) as well, so the count does see the difference
    assert reference > swiglu


def test_kv_cache_greedy_equals_no_cache():
    torch.manual_seed(4)
    model = GPT(small_config()).eval()
    for prompt_len in (1, 5, 16):
        idx = torch.randint(0, 50, (3, prompt_len))
        # 30 new ids pass block_size=16, so the steps after the cache's end are covered too
        cached = model.generate(idx, 30, temperature=0, use_cache=True)
        uncached = model.generate(idx, 30, temperature=0, use_cache=False)
        assert torch.equal(cached, uncached), prompt_len


def test_kv_cache_prefill_then_single_tokens():
    model = GPT(small_config()).eval()
    lengths = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].size(1)))
    model.generate(torch.zeros(1, 4, dtype=torch.long), 16, temperature=0)
    # the prefill of 4 ids, one id per step while the sequence has 5 to 16 ids, then at 17 ids the
    # window restarts with the newest 8 (a second prefill) and grows by one id per step again
    assert lengths == [4] + [1] * 12 + [8] + [1] * 2
    assert all(block.attn.kv_cache is None for block in model.blocks)


@pytest.mark.parametrize("block_size", [1, 2, 3, 8, 9])
def test_context_window_bounds_and_restarts(block_size):
    keep = block_size - block_size // 2
    previous_start = 0
    for length in range(1, 5 * block_size + 3):
        start = context_start(length, block_size)
        window = length - start
        assert window <= block_size, (length, start)
        assert window >= min(length, keep), (length, start)
        assert start >= previous_start, (length, start)
        if start != previous_start:
            # a restart keeps exactly the newest keep ids, and happens only when the window was full
            assert window == keep, (length, start)
            assert length - 1 - previous_start == block_size, (length, start)
        previous_start = start


def test_kv_cache_long_generation_equals_no_cache():
    torch.manual_seed(8)
    model = GPT(small_config(block_size=9)).eval()
    idx = torch.randint(0, 50, (2, 3))
    # 60 new ids restart the 9-id window several times
    cached = model.generate(idx, 60, temperature=0, use_cache=True)
    uncached = model.generate(idx, 60, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_top_p_keeps_smallest_set():
    # sorted: 0.5 (id 1), 0.25 (id 3), 0.2 (id 2), 0.05 (id 0); cumulative 0.5, 0.75, 0.95, 1.0
    probs = torch.tensor([[0.05, 0.5, 0.2, 0.25]])
    cases = {0.01: {1}, 0.5: {1}, 0.6: {1, 3}, 0.75: {1, 3}, 0.9: {1, 2, 3}, 0.96: {0, 1, 2, 3}, 1.0: {0, 1, 2, 3}}
    for top_p, expected in cases.items():
        kept = top_p_filter(probs, top_p)[0]
        assert set(kept.nonzero().flatten().tolist()) == expected, top_p
        torch.testing.assert_close(kept.sum(), torch.tensor(1.0))
        ids = sorted(expected)
        torch.testing.assert_close(kept[ids], probs[0, ids] / probs[0, ids].sum())


def test_top_p_per_row():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45]])
    kept = top_p_filter(probs, 0.8)
    assert (kept[0] > 0).tolist() == [True, True, False]
    assert (kept[1] > 0).tolist() == [False, True, True]


def test_generate_tiny_top_p_is_greedy():
    torch.manual_seed(5)
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 50, (2, 3))
    greedy = model.generate(idx, 20, temperature=0)
    assert torch.equal(model.generate(idx, 20, temperature=1.0, top_p=1e-6), greedy)


@pytest.mark.parametrize("top_p", [0.0, -0.5, 1.5])
def test_generate_rejects_bad_top_p(top_p):
    model = GPT(small_config())
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 1, top_p=top_p)


def test_bench_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    argv = [
        "--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=16", "--batch_size=2", "--device=cpu",
        "--steps=2", "--warmup=1", "--mlp=all", f"--json={path}", "--sample", "--sample_tokens=20",
    ]
    bench.run_bench(argv)
    report = json.loads(path.read_text())
    for key in ("command", "machine", "settings", "matmul_peak_flops", "results", "sample"):
        assert key in report, key
    for key in ("cpu", "threads", "torch"):
        assert key in report["machine"], key
    assert [r["mlp"] for r in report["results"]] == ["gelu", "swiglu", "geglu", "dynactglu"]
    for r in report["results"]:
        assert r["mode"] == "eager"
        assert len(r["step_times_s"]) == 2
        for key in ("step_time_s", "tokens_per_s", "mfu", "memory_bytes"):
            assert r[key] > 0, (r["mlp"], key)
            assert r["vs_swiglu"][key] is not None, (r["mlp"], key)
    swiglu = report["results"][1]
    assert swiglu["vs_swiglu"]["step_time_s"] == 1.0
    assert swiglu["step_time_vs_swiglu_per_round"] == {"median": 1.0, "p10": 1.0, "p90": 1.0}
    for r in report["results"]:
        spread = r["step_time_vs_swiglu_per_round"]
        assert spread["p10"] <= spread["median"] <= spread["p90"], r["mlp"]
    for name, tokens in (("new_tokens", 20), ("context_tokens", 15)):
        assert report["sample"][name]["tokens"] == tokens
        assert report["sample"][name]["speedup"] > 0
        assert report["sample"][name]["same_tokens"] is True


def test_bench_train_loop_ratio(data_root, tmp_path):
    path = tmp_path / "bench.json"
    argv = [
        f"--data_root={data_root}", "--dataset=chars", "--n_layer=1", "--n_embd=32", "--n_head=2",
        "--block_size=16", "--batch_size=2", "--device=cpu", "--mlp=dynactglu", "--steps=3", "--warmup=1",
        f"--json={path}", "--train_loop",
    ]
    bench.run_bench(argv)
    loop = json.loads(path.read_text())["train_loop"]
    assert loop["mlp"] == "dynactglu"
    assert len(loop["step_times_s"]) == 3
    assert loop["tokens_per_s"] > 0
    assert loop["ratio_to_bench"] > 0


def test_bench_train_loop_checks_before_measuring(tmp_path):
    argv = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=16", "--batch_size=2", "--device=cpu",
            "--mlp=swiglu", "--steps=1", "--warmup=0", f"--json={tmp_path / 'b.json'}", "--train_loop"]
    with pytest.raises(bench.UserError, match="add dynactglu to --mlp"):
        bench.run_bench(argv)
    missing_data = [arg.replace("--mlp=swiglu", "--mlp=dynactglu") for arg in argv]
    missing_data.append(f"--data_root={tmp_path / 'no-data'}")
    with pytest.raises(bench.UserError, match="not found"):
        bench.run_bench(missing_data)
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("arg, match", [
    ("--mlp=relu", "--mlp='relu'"),
    ("--steps=0", "--steps=0 must be >= 1"),
    ("--warmup=x", "not a whole number"),
    ("--sample=maybe", "--sample='maybe'"),
    ("--train_loop=yes", "--train_loop='yes'"),
])
def test_bench_rejects_bad_options(arg, match):
    with pytest.raises(bench.UserError, match=match):
        bench.split_args([arg, "--json=out.json"])


def test_bench_requires_json():
    with pytest.raises(bench.UserError, match="--json"):
        bench.split_args(["--steps=2"])
