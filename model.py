"""A GPT language model whose MLP is GELU, SwiGLU, GeGLU or dynActGLU.

dynActivation is a trainable activation with two learned scalars per layer:

    f(x) = base(x) * (alpha - beta) + beta * x

With alpha = 1 and beta = 0 it is the base nonlinearity; as alpha - beta shrinks it moves towards the
linear map beta * x. dynActGLU is the GLU MLP  W_down(f(W_gate x) * W_up x). With alpha = 1, beta = 0
and a SiLU base it computes exactly SwiGLU.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

MLP_TYPES = ("gelu", "swiglu", "geglu", "dynactglu")
DYNACT_BASES = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
    "mish": F.mish,
}


def find_multiple(n: int, k: int) -> int:
    """Round n up to the next multiple of k."""
    return n if n % k == 0 else n + k - n % k


@dataclass
class GPTConfig:
    block_size: int = 256
    vocab_size: int = 65  # the tokenizer's real vocabulary size
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False
    mlp: str = "dynactglu"
    mlp_hidden: int | None = None  # None: 4 * n_embd for GELU, 8/3 * n_embd rounded up to 64 for GLUs
    dynact_base: str = "silu"
    dynact_alpha_init: float = 1.0
    dynact_beta_init: float = 0.0
    # The embedding table is padded to a multiple of 64 rows, because matrix multiplies run faster on
    # such shapes. forward() drops the padding logits, so generate() never produces those ids.
    vocab_multiple: int = 64
    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.mlp not in MLP_TYPES:
            raise ValueError(f"mlp={self.mlp!r} is not a known MLP type; use one of {', '.join(MLP_TYPES)}")
        if self.dynact_base not in DYNACT_BASES:
            raise ValueError(
                f"dynact_base={self.dynact_base!r} is not a known base; use one of {', '.join(DYNACT_BASES)}"
            )
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; choose n_embd as a multiple of n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.mlp_hidden is None:
            if self.mlp == "gelu":
                self.mlp_hidden = 4 * self.n_embd
            else:
                # Three matrices of width 8/3 * n_embd hold as many weights as GELU's two of width 4 * n_embd.
                self.mlp_hidden = find_multiple(math.ceil(8 * self.n_embd / 3), 64)
        elif self.mlp_hidden <= 0:
            raise ValueError(f"mlp_hidden={self.mlp_hidden} must be a positive integer or None")
        self.padded_vocab_size = find_multiple(self.vocab_size, self.vocab_multiple)

    def to_dict(self) -> dict:
        """Return the constructor arguments as plain Python types, for checkpoints."""
        return {name: getattr(self, name) for name in inspect.signature(GPTConfig).parameters}


def sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """Return the sum of a * b over all elements, accumulated in float32 (float64 for float64 inputs)."""
    if a.dtype in (torch.float32, torch.float64):
        # one pass over both tensors and no temporary, unlike (a * b).sum()
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return (a * b).sum(dtype=torch.float32)


def dynact_scalar_grads(grad_f: Tensor, silu_x: Tensor, x: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Return the gradients of alpha and beta, given the gradient of f(x) = (alpha - beta) * silu(x) + beta * x.

    d/d alpha = sum(grad_f * silu(x)) and d/d beta = sum(grad_f * (x - silu(x))), reduced in float32 and
    returned in the parameters' dtype.
    """
    grad_silu = sum_of_products(grad_f, silu_x)
    grad_identity = sum_of_products(grad_f, x)
    return grad_silu.to(alpha.dtype), (grad_identity - grad_silu).to(beta.dtype)


def dynact_input_grad(grad_f: Tensor, x: Tensor, scale: Tensor, beta: Tensor, out: Tensor | None = None) -> Tensor:
    """Return grad_f * f'(x), where f'(x) = scale * silu'(x) + beta and scale = alpha - beta.

    The result is written into out when it is given, which saves an allocation when a buffer is free.
    """
    # silu_backward computes grad_f * silu'(x) in one pass.
    if out is None:
        grad_x = torch.ops.aten.silu_backward(grad_f, x)
    else:
        grad_x = torch.ops.aten.silu_backward.grad_input(grad_f, x, grad_input=out)
    grad_x.mul_(scale)
    return grad_x.addcmul_(grad_f, beta)


def dynact_coefficients(alpha: Tensor, beta: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Return alpha - beta and beta in `dtype`, the coefficients of silu(x) and x in f(x)."""
    return (alpha - beta).to(dtype), beta.to(dtype)


def silu_dynact(
    x: Tensor, scale: Tensor, beta: Tensor, silu_x: Tensor | None = None, overwrite_silu_x: bool = False
) -> Tensor:
    """Return f(x) = scale * silu(x) + beta * x, from silu_x = silu(x) when it is given.

    The result is a new tensor, unless overwrite_silu_x is set: then it is written into silu_x.
    """
    if silu_x is None:
        y = F.silu(x).mul_(scale)
    elif overwrite_silu_x:
        y = silu_x.mul_(scale)
    else:
        y = torch.mul(silu_x, scale)
    return y.addcmul_(x, beta)


class SiLUDynActFunction(torch.autograd.Function):
    """dynActivation with a SiLU base, f(x) = x * (beta + (alpha - beta) * sigmoid(x)), in few elementwise passes.

    Autograd on the formula saves x, silu(x) and the scalars and runs about ten elementwise kernels. This
    Function saves only x (and the 0-dim alpha and beta), recomputes silu(x) in backward and returns all
    three gradients from one backward. The alpha and beta gradients are reduced in float32 and returned in
    the parameters' dtype. x may be float32, float64 or a lower precision such as bfloat16 under autocast.
    Backward is not differentiable again (no double backward), unlike the formula.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(x, alpha, beta)
        return silu_dynact(x, *dynact_coefficients(alpha, beta, x.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, alpha, beta = ctx.saved_tensors
        grad_x = grad_alpha = grad_beta = None
        needs_scalar_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        # One buffer serves first as silu(x) and then as the gradient of x, which saves an allocation.
        buffer = F.silu(x) if needs_scalar_grads else torch.empty_like(x)
        if needs_scalar_grads:
            grad_alpha, grad_beta = dynact_scalar_grads(grad, buffer, x, alpha, beta)
        if ctx.needs_input_grad[0]:
            grad_x = dynact_input_grad(grad, x, *dynact_coefficients(alpha, beta, x.dtype), out=buffer)
        return grad_x, grad_alpha, grad_beta


class SiLUDynActGLUFunction(torch.autograd.Function):
    """The dynActGLU gate product h = f(g) * u with a SiLU base, f(g) = (alpha - beta) * silu(g) + beta * g.

    SwiGLU's silu(g) * u saves g, silu(g) and u for backward. This Function saves the same three tensors
    (and the 0-dim alpha and beta), so dynActGLU keeps exactly SwiGLU's activation memory. Because silu(g)
    is saved, backward rebuilds f(g) with two cheap elementwise passes and never evaluates silu again.

    It runs about twice as many elementwise passes as SwiGLU's autograd. In eager mode, however, its
    backward writes the gradient of u into the buffer of the saved silu(g), which only this Function
    holds. It therefore allocates two new tensors where SwiGLU's backward allocates three, and on a CPU,
    where a fresh multi-megabyte tensor costs page faults, the saved allocation outweighs the extra passes.
    NOTE: after that overwrite the saved tensors are spent, so a second backward through the same graph
    (retain_graph=True, torch.autograd.gradcheck) raises PyTorch's "modified by an inplace operation"
    error. Pass overwrite_saved=False, or set DynActivation.overwrite_saved = False, to keep them.
    Backward is not differentiable again (no double backward).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, g: Tensor, u: Tensor, alpha: Tensor, beta: Tensor, overwrite_saved: bool = True
    ) -> Tensor:
        silu_g = F.silu(g)
        ctx.save_for_backward(g, silu_g, u, alpha, beta)
        ctx.overwrite_saved = overwrite_saved
        return silu_dynact(g, *dynact_coefficients(alpha, beta, g.dtype), silu_g).mul_(u)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        g, silu_g, u, alpha, beta = ctx.saved_tensors
        scale, beta_ = dynact_coefficients(alpha, beta, g.dtype)
        grad_g = grad_u = grad_alpha = grad_beta = None
        grad_f = grad_h * u
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_alpha, grad_beta = dynact_scalar_grads(grad_f, silu_g, g, alpha, beta)
        if ctx.needs_input_grad[0]:
            grad_g = dynact_input_grad(grad_f, g, scale, beta_)
        if ctx.needs_input_grad[1]:
            # grad_u = grad_h * f(g), last because in eager mode f(g) may overwrite silu(g). Compiled
            # graphs get a new tensor, because the compiler fuses these passes and plans memory itself.
            overwrite = ctx.overwrite_saved and not torch.compiler.is_compiling()
            grad_u = silu_dynact(g, scale, beta_, silu_g, overwrite_silu_x=overwrite).mul_(grad_h)
        return grad_g, grad_u, grad_alpha, grad_beta, None


class DynActivation(nn.Module):
    """dynActivation f(x) = base(x) * (alpha - beta) + beta * x with learned scalars alpha and beta.

    The SiLU base runs through SiLUDynActFunction, and inside a GLU through SiLUDynActGLUFunction (see
    gate()); torch.compile traces both without a graph break. Other bases, and modules with
    use_reference=True, evaluate the formula with ordinary autograd.
    """

    def __init__(self, base: str = "silu", alpha_init: float = 1.0, beta_init: float = 0.0) -> None:
        super().__init__()
        self.base_name = base
        self.base = DYNACT_BASES[base]
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.use_reference = False
        # When True, gate()'s backward reuses a saved buffer, so a second backward through one graph fails.
        self.overwrite_saved = True

    def forward(self, x: Tensor) -> Tensor:
        if self.base_name != "silu" or self.use_reference:
            return self.reference(x)
        if not torch.is_grad_enabled():
            # without autograd the Function's bookkeeping is pure overhead, which matters when sampling
            return silu_dynact(x, *dynact_coefficients(self.alpha, self.beta, x.dtype))
        return SiLUDynActFunction.apply(x, self.alpha, self.beta)

    def gate(self, g: Tensor, u: Tensor) -> Tensor:
        """Return the GLU gate product f(g) * u, through SiLUDynActGLUFunction for the SiLU base."""
        if self.base_name != "silu" or self.use_reference:
            return self(g) * u
        if not torch.is_grad_enabled():
            return silu_dynact(g, *dynact_coefficients(self.alpha, self.beta, g.dtype)).mul_(u)
        return SiLUDynActGLUFunction.apply(g, u, self.alpha, self.beta, self.overwrite_saved)

    def reference(self, x: Tensor) -> Tensor:
        """Evaluate the formula with ordinary autograd."""
        alpha = self.alpha.to(x.dtype)
        beta = self.beta.to(x.dtype)
        return self.base(x) * (alpha - beta) + beta * x

    def extra_repr(self) -> str:
        return f"base={self.base_name}"


def make_gate(config: GPTConfig) -> nn.Module:
    """Build the gate activation of a GLU MLP: SiLU, GELU or dynActivation."""
    if config.mlp == "swiglu":
        return nn.SiLU()
    if config.mlp == "geglu":
        return nn.GELU()
    if config.mlp == "dynactglu":
        return DynActivation(config.dynact_base, config.dynact_alpha_init, config.dynact_beta_init)
    raise ValueError(f"mlp={config.mlp!r} is not a GLU type")


class GELUMLP(nn.Module):
    """The GPT-2 MLP: W_down(GELU(W_up x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.w_up = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.w_down = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w_down(F.gelu(self.w_up(x))))


class GLUMLP(nn.Module):
    """A gated MLP W_down(gate(W_gate x) * W_up x); SwiGLU, GeGLU and dynActGLU differ only in the gate."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.w_gate = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.w_up = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.w_down = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.act = make_gate(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        g, u = self.w_gate(x), self.w_up(x)
        h = self.act.gate(g, u) if isinstance(self.act, DynActivation) else self.act(g) * u
        return self.dropout(self.w_down(h))


class KVCache(nn.Module):
    """Keys and values of one attention layer at positions 0 .. max_len - 1, filled during generation.

    The buffers are allocated by the first update, with its batch size, device and dtype.
    """

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("k", None, persistent=False)
        self.register_buffer("v", None, persistent=False)

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k and v (B, nh, T, hs) at positions start .. start + T - 1 and return positions 0 .. start + T - 1."""
        if self.k is None:
            shape = (k.size(0), k.size(1), self.max_len, k.size(3))
            self.k = k.new_zeros(shape)
            self.v = v.new_zeros(shape)
        end = start + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None  # set by GPT.generate

    def forward(self, x: Tensor, start_pos: int | None = None) -> Tensor:
        """Attend causally over x (B, T, C).

        With start_pos and a KV cache, x contains positions start_pos onwards and the cache the earlier ones.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if start_pos is not None and self.kv_cache is not None:
            k, v = self.kv_cache.update(start_pos, k, v)
        dropout_p = self.dropout if self.training else 0.0
        n_keys = k.size(2)
        if n_keys == T:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # The T queries are the last T of n_keys positions, so a single query attends to every key.
            mask = None if T == 1 else torch.ones(T, n_keys, dtype=torch.bool, device=x.device).tril(n_keys - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """A pre-LayerNorm transformer block."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = GELUMLP(config) if config.mlp == "gelu" else GLUMLP(config)

    def forward(self, x: Tensor, start_pos: int | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), start_pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings

        self.apply(self._init_weights)
        # GPT-2 scales the init of projections that write into the residual stream by 1/sqrt(2 * n_layer),
        # because each block adds two of them to the stream.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.w_down.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Count parameters; the tied head counts once, and non_embedding drops both embedding tables."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, start_pos: int | None = None, last_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Return logits (B, T, vocab_size) and, with targets, the mean cross-entropy loss.

        With start_pos (used by generate), idx contains positions start_pos .. start_pos + T - 1 and the
        attention layers read the earlier positions from their KV caches and store the new ones there.
        With last_only (and no targets), the head runs on the last position only and logits are (B, 1, vocab_size).
        """
        B, T = idx.shape
        first = start_pos or 0
        if first + T > self.config.block_size:
            raise ValueError(f"sequence length {first + T} exceeds block_size={self.config.block_size}")
        pos = torch.arange(first, first + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x, start_pos)
        # Padding rows of the head are dropped, so the softmax covers only real token ids.
        if last_only and targets is None:
            x = x[:, -1:]
        logits = self.lm_head(self.ln_f(x))[..., : self.config.vocab_size]
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def dynact_parameters(self) -> tuple[list[float], list[float]]:
        """Return the alpha and beta of every layer's dynActivation, first layer first."""
        alphas, betas = [], []
        for block in self.blocks:
            act = getattr(block.mlp, "act", None)
            if isinstance(act, DynActivation):
                alphas.append(act.alpha.item())
                betas.append(act.beta.item())
        return alphas, betas

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Split parameters into a decayed group (matrices, embeddings) and an undecayed one.

        Biases, LayerNorm weights and the dynActivation scalars alpha and beta are not decayed: decay would
        pull alpha and beta towards 0 and so towards a zero activation, which is not a regularizer.
        """
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizer(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        # PyTorch 2.4 and later have a fused AdamW for CUDA and CPU tensors. On the CPU it runs each update
        # in C++, where the default implementation dispatches about ten ops per tensor from Python.
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(
            self.optimizer_groups(weight_decay), lr=learning_rate, betas=betas, fused=fused
        )

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Count training FLOPs per token (forward and backward, 3x the forward's matrix multiplies).

        A multiply-add counts as 2 FLOPs. Attention's QK^T and AV count at the full sequence length;
        elementwise work (activations, norms, softmax) is left out, as is usual for MFU.
        """
        c = self.config
        T = seq_len or c.block_size
        d = c.n_embd
        mlp_matrices = 2 if c.mlp == "gelu" else 3
        per_layer = (
            2 * d * 3 * d  # q, k, v projection
            + 2 * d * d  # attention output projection
            + 2 * 2 * T * d  # QK^T and the weighted sum over V
            + mlp_matrices * 2 * d * c.mlp_hidden
        )
        head = 2 * d * c.padded_vocab_size
        return 3 * (c.n_layer * per_layer + head)

    def set_kv_caches(self, enabled: bool) -> None:
        """Give every attention layer an empty KV cache of block_size positions, or remove the caches."""
        for block in self.blocks:
            block.attn.kv_cache = KVCache(self.config.block_size) if enabled else None

    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        use_cache: bool = True,
    ) -> Tensor:
        """Append max_new_tokens sampled ids to idx (B, T).

        temperature 0 picks the most likely id (greedy). top_k keeps the k most likely ids and top_p the
        smallest set of most likely ids whose probabilities sum to at least top_p (1.0 turns it off).
        forward() returns logits for real ids only, so ids at or above the tokenizer's vocab_size (padding
        rows of the embedding) are never sampled.

        The model is given the ids that context_start() selects: all of them up to block_size, and past
        that a window of at least the newest ceil(block_size / 2) ids, which is cut back when it is full.
        use_cache changes the speed only, never the ids: with it, the window runs once (prefill) and
        every later step runs only the newest id against the cached keys and values, until the window is
        cut back and the next prefill starts.
        """
        check_sampling(temperature, top_k, top_p)
        # inference_mode skips autograd's bookkeeping, which no_grad still does. The clone turns the
        # result back into an ordinary tensor that callers may also use in autograd.
        with torch.inference_mode():
            out = self._generate(idx, max_new_tokens, temperature, top_k, top_p, use_cache)
        return out.clone()

    def _generate(
        self, idx: Tensor, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float, use_cache: bool
    ) -> Tensor:
        block_size = self.config.block_size
        window_start = -1  # index in idx of the window's first id, whose position is 0
        n_cached = 0  # ids of the window whose keys and values are in the caches, counted from idx's start
        if use_cache:
            self.set_kv_caches(True)
        try:
            for _ in range(max_new_tokens):
                start = context_start(idx.size(1), block_size)
                if not use_cache:
                    logits, _ = self(idx[:, start:], last_only=True)
                else:
                    if start != window_start:
                        window_start = n_cached = start
                    logits, _ = self(idx[:, n_cached:], start_pos=n_cached - window_start, last_only=True)
                    n_cached = idx.size(1)
                next_id = pick_next_token(logits[:, -1, :].float(), temperature, top_k, top_p)
                idx = torch.cat((idx, next_id), dim=1)
        finally:
            if use_cache:
                self.set_kv_caches(False)
        return idx


def context_start(length: int, block_size: int) -> int:
    """Return the index of the first id in the model's input when it predicts the id after `length` ids.

    Up to block_size ids the input contains all of them. When a sequence first outgrows block_size, the
    window restarts with its newest keep = block_size - block_size // 2 ids and then grows by one id per
    step until it holds block_size ids again, and so on. Positions are absolute (0 at the window's
    start), so a KV cache stays valid while the window grows and is refilled once per restart, which
    costs one forward over keep ids every block_size - keep + 1 steps. Sliding the window by one id per
    step would keep every step at block_size ids of context but move every position, so no step could
    use the cache.
    """
    if length <= block_size:
        return 0
    keep = block_size - block_size // 2
    period = block_size + 1 - keep
    return length - keep - (length - block_size - 1) % period


def check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    """Raise ValueError for sampling settings that generate() cannot use."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy decoding)")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k={top_k} must be a positive integer or None")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1]; 1.0 turns nucleus sampling off")


def pick_next_token(logits: Tensor, temperature: float, top_k: int | None, top_p: float) -> Tensor:
    """Return one id (B, 1) per row of logits (B, vocab): the argmax at temperature 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p < 1.0:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, num_samples=1)


def top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Keep, per row, the smallest set of most likely ids whose probabilities sum to at least top_p.

    probs (B, vocab) contains probabilities. The result contains the kept ones, renormalized, and zeros
    elsewhere. The most likely id is always kept.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    # An id is dropped once the ids ranked above it already reach top_p.
    drop = torch.zeros_like(sorted_probs, dtype=torch.bool)
    drop[:, 1:] = cumulative[:, :-1] >= top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)
