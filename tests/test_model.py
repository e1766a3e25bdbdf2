import math

import pytest
import torch
import torch.nn.functional as F

from model import DYNACT_BASES, GPT, MLP_TYPES, DynActivation, GLUMLP, GPTConfig, KVCache

PAPER = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)


def small_config(**overrides) -> GPTConfig:
    values = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    values.update(overrides)
    return GPTConfig(**values)


@pytest.mark.parametrize("base", sorted(DYNACT_BASES))
def test_dynact_matches_formula(base):
    torch.manual_seed(0)
    reference = {
        "silu": lambda x: x * torch.sigmoid(x),
        "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
        "relu": lambda x: torch.clamp(x, min=0),
        "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
    }[base]
    for _ in range(5):
        alpha, beta = torch.randn(2, dtype=torch.float64).tolist()
        act = DynActivation(base).double()
        with torch.no_grad():
            act.alpha.fill_(alpha)
            act.beta.fill_(beta)
        x = 3 * torch.randn(64, 17, dtype=torch.float64)
        expected = reference(x) * (alpha - beta) + beta * x
        torch.testing.assert_close(act(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base", sorted(DYNACT_BASES))
def test_dynact_gradcheck(base):
    torch.manual_seed(1)
    # ReLU's kink at 0 has no derivative; random inputs avoid it.
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    act = DynActivation(base).double()

    def module_fn(x, alpha, beta):
        return torch.func.functional_call(act, {"alpha": alpha, "beta": beta}, (x,))

    assert torch.autograd.gradcheck(module_fn, (x, alpha, beta))


def test_dynactglu_identity_equals_swiglu():
    torch.manual_seed(2)
    swiglu = GLUMLP(small_config(mlp="swiglu"))
    dyn = GLUMLP(small_config(mlp="dynactglu", dynact_alpha_init=1.0, dynact_beta_init=0.0))
    dyn.load_state_dict(swiglu.state_dict(), strict=False)
    x = torch.randn(4, 7, 32)
    torch.testing.assert_close(dyn(x), swiglu(x), rtol=0, atol=1e-6)


def test_geglu_gate_is_gelu():
    torch.manual_seed(3)
    mlp = GLUMLP(small_config(mlp="geglu"))
    x = torch.randn(3, 32)
    expected = mlp.w_down(F.gelu(mlp.w_gate(x)) * mlp.w_up(x))
    torch.testing.assert_close(mlp(x), expected)


def test_derived_hidden_sizes():
    assert GPTConfig(**PAPER, mlp="gelu").mlp_hidden == 1536
    for mlp in ("swiglu", "geglu", "dynactglu"):
        assert GPTConfig(**PAPER, mlp=mlp).mlp_hidden == 1024
    assert GPTConfig(**PAPER, mlp="swiglu", mlp_hidden=512).mlp_hidden == 512
    assert GPTConfig(**PAPER).padded_vocab_size == 128


def test_paper_size_parameter_counts():
    counts = {mlp: GPT(GPTConfig(**PAPER, mlp=mlp)).num_params() for mlp in MLP_TYPES}
    for mlp in ("swiglu", "geglu", "dynactglu"):
        assert abs(counts[mlp] - counts["gelu"]) / counts["gelu"] < 0.01
    # dynActGLU adds exactly one (alpha, beta) pair per layer to SwiGLU
    assert counts["dynactglu"] - counts["swiglu"] == 2 * PAPER["n_layer"]


def test_one_dynact_pair_per_layer():
    model = GPT(small_config(n_layer=3))
    names = [n for n, _ in model.named_parameters() if n.endswith((".alpha", ".beta"))]
    assert len(names) == 6
    alphas, betas = model.dynact_parameters()
    assert alphas == [1.0, 1.0, 1.0]
    assert betas == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("mlp", MLP_TYPES)
def test_flops_per_token_counts_matrices(mlp):
    config = small_config(mlp=mlp)
    model = GPT(config)
    d, L, T = config.n_embd, config.n_layer, config.block_size
    matrices = 3 if mlp != "gelu" else 2
    matmul_params = L * (4 * d * d + matrices * d * config.mlp_hidden) + d * config.padded_vocab_size
    assert model.flops_per_token() == 6 * matmul_params + 3 * L * 4 * T * d


def test_optimizer_groups_exclude_alpha_beta_from_decay():
    model = GPT(small_config(bias=True))
    decay, no_decay = model.optimizer_groups(weight_decay=0.1)
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2
        assert (id(p) in decayed) == is_matrix, name
        if name.endswith((".alpha", ".beta")) or "ln" in name or name.endswith(".bias"):
            assert id(p) not in decayed, name


def test_alpha_beta_unchanged_without_gradient():
    model = GPT(small_config())
    opt = model.configure_optimizer(weight_decay=0.5, learning_rate=1e-2, betas=(0.9, 0.99), device_type="cpu")
    act = model.blocks[0].mlp.act
    gate_before = model.blocks[0].mlp.w_gate.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert act.alpha.item() == 1.0
    assert act.beta.item() == 0.0
    # a decayed matrix does shrink under the same zero gradient, so the check above can fail
    assert not torch.equal(model.blocks[0].mlp.w_gate.weight, gate_before)


def test_generate_never_returns_padding_ids():
    config = small_config(vocab_size=37)
    model = GPT(config)
    with torch.no_grad():
        # make the padding rows the most likely outputs if they were not excluded
        model.lm_head.weight[37:] = 10.0
    idx = torch.zeros(4, 1, dtype=torch.long)
    for temperature, top_k in ((1.0, None), (0.8, 5), (0.0, None), (2.0, 200)):
        out = model.generate(idx, 40, temperature=temperature, top_k=top_k)
        assert out.shape == (4, 41)
        assert int(out.max()) < 37


def test_generate_rejects_bad_settings():
    model = GPT(small_config())
    idx = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(idx, 1, top_k=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mlp="relu"), "mlp='relu'"),
    (dict(n_embd=30, n_head=4), "not divisible"),
    (dict(dynact_base="tanh"), "dynact_base"),
])
def test_config_rejects_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_config(**kwargs)


def test_kv_cache_update_returns_prefix():
    cache = KVCache(max_len=8)
    k = torch.randn(2, 3, 5, 4)
    v = torch.randn(2, 3, 5, 4)
    keys, values = cache.update(0, k, v)
    assert torch.equal(keys, k)
    assert torch.equal(values, v)
    k_next, v_next = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    keys, values = cache.update(5, k_next, v_next)
    assert keys.shape == (2, 3, 6, 4)
    assert torch.equal(keys[:, :, :5], k)
    assert torch.equal(keys[:, :, 5:], k_next)
    assert torch.equal(values[:, :, 5:], v_next)


def test_cached_forward_matches_full_forward():
    torch.manual_seed(4)
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 50, (2, 10))
    full, _ = model(idx)
    model.set_kv_caches(True)
    first, _ = model(idx[:, :6], start_pos=0)
    middle, _ = model(idx[:, 6:9], start_pos=6)  # several new positions against the cache
    last, _ = model(idx[:, 9:], start_pos=9)
    model.set_kv_caches(False)
    torch.testing.assert_close(torch.cat((first, middle, last), dim=1), full, rtol=1e-5, atol=1e-5)


def test_forward_rejects_positions_past_block_size():
    model = GPT(small_config())
    model.set_kv_caches(True)
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        model(torch.zeros(1, 2, dtype=torch.long), start_pos=15)


def test_kv_caches_stay_out_of_state_dict():
    model = GPT(small_config())
    keys = set(model.state_dict())
    model.set_kv_caches(True)
    model(torch.zeros(1, 3, dtype=torch.long), start_pos=0)
    assert set(model.state_dict()) == keys
