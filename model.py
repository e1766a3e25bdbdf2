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
    # such shapes; ids at or above vocab_size are never produced by generate().
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


class DynActivation(nn.Module):
    """dynActivation f(x) = base(x) * (alpha - beta) + beta * x with learned scalars alpha and beta."""

    def __init__(self, base: str = "silu", alpha_init: float = 1.0, beta_init: float = 0.0) -> None:
        super().__init__()
        self.base_name = base
        self.base = DYNACT_BASES[base]
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))

    def forward(self, x: Tensor) -> Tensor:
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
        return self.dropout(self.w_down(self.act(self.w_gate(x)) * self.w_up(x)))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
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

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
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

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Return logits (B, T, vocab_size) and, with targets, the mean cross-entropy loss."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size={self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        # Padding rows of the head are dropped, so the softmax covers only real token ids.
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
        fused = device_type == "cuda"
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

    @torch.no_grad()
    def generate(
        self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> Tensor:
        """Append max_new_tokens sampled ids to idx (B, T).

        temperature 0 picks the most likely id (greedy). forward() returns logits for real ids only, so ids
        at or above the tokenizer's vocab_size (padding rows of the embedding) are never sampled.
        """
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy decoding)")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k={top_k} must be a positive integer or None")
        real_vocab = self.config.vocab_size
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits, _ = self(context)
            logits = logits[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < real_vocab:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx
