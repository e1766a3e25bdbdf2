"""Sample text from a checkpoint written by train.py.

    python sample.py --out_dir=out/cpu/dynactglu-s1337 --ckpt=ckpt_002000.pt --start="ROMEO:"

The tokenizer is rebuilt from the checkpoint, so sampling never depends on a data folder. An empty prompt
starts from a newline (character-level) or the end-of-text token (GPT-2 BPE). --temperature=0 decodes
greedily.
"""

from __future__ import annotations

import math
import os

import torch

from checkpoint import load_checkpoint
from model import GPT, GPTConfig
from settings import ArgumentParser, UserError, report_user_error
from tokenizer import tokenizer_from_description
from train import pick_device


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Sample text from a train.py checkpoint.")
    p.add_argument("--out_dir", required=True, help="the training run's folder")
    p.add_argument("--ckpt", default="ckpt.pt", help="checkpoint file name inside out_dir, e.g. ckpt_005620.pt")
    p.add_argument("--start", default="\n", help='prompt text, or FILE:path to read it from a file')
    p.add_argument("--num_samples", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy decoding")
    p.add_argument("--top_k", type=int, default=200, help="sample among the k most likely tokens")
    p.add_argument(
        "--top_p", type=float, default=1.0,
        help="nucleus sampling: sample among the fewest most likely tokens whose probabilities sum to at "
        "least top_p, in (0, 1]; 1.0 turns it off",
    )
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--gpt2_ranks", default=None, help="local gpt2.tiktoken ranks file for GPT-2 BPE checkpoints")
    return p


def read_prompt(start: str) -> str:
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:") :]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"prompt file {path!r} not found; pass --start=FILE:path/to/prompt.txt") from None


def empty_prompt_id(tokenizer: object, kind: str) -> int:
    """Return the id an empty prompt starts from: end-of-text for GPT-2, else a newline (or id 0 without one)."""
    if kind == "gpt2":
        return tokenizer.eot_token
    try:
        return tokenizer.encode("\n")[0]
    except ValueError:
        return 0


def load_model(path: str, device: torch.device) -> tuple[GPT, dict]:
    """Load a checkpoint's model in eval mode; reject weights that contain NaN or Inf."""
    folder = os.path.dirname(path) or "."
    if not os.path.isfile(path) and os.path.isdir(folder):
        available = sorted(name for name in os.listdir(folder) if name.startswith("ckpt") and name.endswith(".pt"))
        choices = ", ".join(available) if available else "none; train a run into this folder first"
        raise UserError(f"checkpoint {path!r} not found; checkpoints in {folder!r}: {choices}")
    ckpt = load_checkpoint(path, map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise UserError(f"checkpoint {path!r} has NaN or Inf weights (in {', '.join(bad[:3])}); sample from an earlier checkpoint")
    model.eval().to(device)
    return model, ckpt


def sample(argv: list[str] | None = None) -> list[str]:
    """Generate and print samples; return them as text."""
    args = build_parser().parse_args(argv)
    if args.num_samples <= 0:
        raise UserError(f"--num_samples={args.num_samples} must be positive; pass e.g. --num_samples=1")
    if args.max_new_tokens <= 0:
        raise UserError(f"--max_new_tokens={args.max_new_tokens} must be positive; pass e.g. --max_new_tokens=500")
    if args.temperature < 0 or not math.isfinite(args.temperature):
        raise UserError(f"--temperature={args.temperature} must be >= 0; use 0 for greedy decoding")
    if args.top_k <= 0:
        raise UserError(
            f"--top_k={args.top_k} must be positive; pass e.g. --top_k=200, or a value at or above the "
            "vocabulary size to keep every token"
        )
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top_p={args.top_p} must be in (0, 1]; use 1.0 to turn nucleus sampling off")

    device = pick_device(args.device, 0)
    model, ckpt = load_model(os.path.join(args.out_dir, args.ckpt), device)
    tokenizer = tokenizer_from_description(ckpt["tokenizer"], gpt2_ranks=args.gpt2_ranks)
    prompt = read_prompt(args.start)
    try:
        ids = tokenizer.encode(prompt) if prompt else []
    except ValueError as e:
        raise UserError(str(e)) from None
    if not ids:
        ids = [empty_prompt_id(tokenizer, ckpt["tokenizer"]["kind"])]

    torch.manual_seed(args.seed)
    x = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)
    out = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    texts = [tokenizer.decode(row.tolist()) for row in out]
    for text in texts:
        print(text)
        print("-" * 40)
    return texts


def main() -> None:
    try:
        sample()
    except UserError as e:
        report_user_error(e, 2)


if __name__ == "__main__":
    main()
