"""Benchmark training steps of the MLP types side by side on one device.

    python bench.py config/shakespeare_char.py --mlp=all --json=bench.json
    python bench.py config/cpu.py --compile=True --steps=30 --warmup=5 --sample --json=bench-cpu.json

Config files and --key=value settings are those of train.py. The options below belong to bench.py:

    --mlp=all|NAME[,NAME...]  MLP types to compare (default: all four)
    --json=PATH               write every number, the machine and the command line to PATH (required)
    --steps=N                 timed training steps per MLP type (default: 20)
    --warmup=N                untimed steps per MLP type before those (default: 3)
    --sample                  also time greedy generation with and without the KV cache, from the model
                              that the settings describe (their mlp, not --mlp)
    --sample_tokens=N         new tokens for --sample (default: 500); block_size - 1 tokens are timed too
    --train_loop              also run train.py's training loop for warmup + steps updates of the
                              settings' mlp, on the prepared dataset, and compare its tokens/s with the
                              eager training step measured here

A training step is forward, backward and an AdamW step on a random batch of batch_size x block_size
tokens; gradient_accumulation_steps is ignored. The steps of the MLP types are interleaved in rotating
order (A B C D, B C D A, ...), so a change in machine load affects all of them alike and none always runs
first, and the median step time is reported.
Eager mode is always measured, and compiled mode too with --compile=True. MFU is relative to a matrix
multiply measured in the same run on the same device. Memory is, on CUDA, the peak a training step
allocates above what was allocated before it, and on other devices the bytes of the distinct storages
that autograd saves for backward in one forward, parameters excluded. Ratios compare each MLP type with
SwiGLU in the same mode. The vocabulary size comes from the configured dataset's meta.json, or is 65 when
the dataset is not prepared.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext, redirect_stdout
from typing import Callable

import torch
from torch import Tensor

from model import GPT, MLP_TYPES
from settings import TrainConfig, UserError, parse_args, report_user_error
import train
from train import cpu_name, data_dir_for, load_meta, measure_matmul_flops, pick_device, pick_dtype

USAGE = (
    "usage: bench.py [config files ...] [--key=value ...] [--mlp=all|NAME[,NAME...]] --json=PATH "
    "[--steps=N] [--warmup=N] [--sample] [--sample_tokens=N] [--train_loop]"
)
DEFAULT_VOCAB_SIZE = 65  # the character-level Tiny Shakespeare vocabulary, used when no prepared data is found
BASELINE = "swiglu"

StepFunction = Callable[[Tensor, Tensor], None]


@dataclasses.dataclass
class BenchOptions:
    mlp_types: list[str]
    json_path: str
    steps: int = 20
    warmup: int = 3
    sample: bool = False
    sample_tokens: int = 500
    train_loop: bool = False


def parse_count(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--{name}={text!r} is not a whole number; pass e.g. --{name}=20") from None
    if value < minimum:
        raise UserError(f"--{name}={value} must be >= {minimum}")
    return value


def parse_mlp_types(text: str) -> list[str]:
    if text == "all":
        return list(MLP_TYPES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MLP_TYPES]
    if unknown or not names:
        raise UserError(f"--mlp={text!r} is not valid; use all or a comma-separated list of {', '.join(MLP_TYPES)}")
    return list(dict.fromkeys(names))


def parse_flag(name: str, sep: str, text: str) -> bool:
    if not sep or text == "True":
        return True
    if text == "False":
        return False
    raise UserError(f"--{name}={text!r} is not valid; write --{name}, --{name}=True or --{name}=False")


def split_args(argv: list[str]) -> tuple[BenchOptions, list[str]]:
    """Separate bench.py's own options from the settings that parse_args reads."""
    values: dict[str, object] = {"mlp_types": list(MLP_TYPES)}
    settings_args = []
    for arg in argv:
        name, sep, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name == "mlp":
            values["mlp_types"] = parse_mlp_types(text)
        elif name == "json":
            if not text:
                raise UserError("--json needs a path, e.g. --json=bench.json")
            values["json_path"] = text
        elif name in ("steps", "sample_tokens"):
            values[name] = parse_count(name, text, 1)
        elif name == "warmup":
            values[name] = parse_count(name, text, 0)
        elif name in ("sample", "train_loop"):
            values[name] = parse_flag(name, sep, text)
        else:
            settings_args.append(arg)
    if "json_path" not in values:
        raise UserError("--json=PATH is missing; pass the file to write the results to, e.g. --json=bench.json")
    return BenchOptions(**values), settings_args


# -----------------------------------------------------------------------------
# measurements


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device, dtype: torch.dtype) -> object:
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def vocab_size_for(cfg: TrainConfig) -> tuple[int, str]:
    """Return the vocabulary size of the configured dataset, or the default when it is not prepared."""
    data_dir = data_dir_for(cfg)
    if not os.path.isfile(os.path.join(data_dir, "meta.json")):
        return DEFAULT_VOCAB_SIZE, "default (dataset not prepared)"
    return load_meta(data_dir, cfg.dataset)["vocab_size"], os.path.join(data_dir, "meta.json")


def random_batch(cfg: TrainConfig, vocab_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    tokens = torch.randint(0, vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)
    return tokens[:, :-1], tokens[:, 1:]


def build_model(cfg: TrainConfig, mlp: str, vocab_size: int, device: torch.device) -> GPT:
    torch.manual_seed(cfg.seed)
    return GPT(dataclasses.replace(cfg, mlp=mlp).model_config(vocab_size)).to(device)


def make_step(
    cfg: TrainConfig, model: GPT, forward: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> StepFunction:
    """Return a function that runs one training step (forward, backward, AdamW) on a batch.

    forward is the model itself or its compiled wrapper.
    """
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = autocast_for(device, dtype)

    def step(x: Tensor, y: Tensor) -> None:
        with autocast:
            _, loss = forward(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def saved_tensor_bytes(run: Callable[[], object], exclude: list[Tensor]) -> int:
    """Count the bytes of the distinct storages that autograd saves while run() executes.

    Storages of the tensors in exclude (usually the parameters) are not counted. A storage saved by several
    operations counts once. The result of run() is kept until counting ends, so no storage is freed and its
    address reused while the hook records addresses.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    sizes: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            sizes[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    total = sum(sizes.values())
    del result
    return total


def model_saved_bytes(
    model: GPT, forward: torch.nn.Module, batch: tuple[Tensor, Tensor], device: torch.device, dtype: torch.dtype
) -> int:
    def run() -> object:
        with autocast_for(device, dtype):
            return forward(*batch)

    return saved_tensor_bytes(run, list(model.parameters()))


def cuda_step_peak_bytes(step: StepFunction, batch: tuple[Tensor, Tensor], device: torch.device) -> int:
    """Return the peak memory one step allocates above what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(*batch)
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def interleaved_step_times(
    steps: dict[str, StepFunction], batches: list[tuple[Tensor, Tensor]], warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Run the step functions in rotating turns (A B C, B C A, C A B, ...) and return the seconds of each timed step.

    The rotation gives every function each place in a round equally often. Without it, the first place
    ran about 1.5% slower than the others in one run with two identical SwiGLU models on a 2-core CPU.
    """
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, batch in enumerate(batches):
        first = i % len(names)
        for name in names[first:] + names[:first]:
            synchronize(device)
            start = time.perf_counter()
            steps[name](*batch)
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def timing_summary(cfg: TrainConfig, model: GPT, times: list[float], peak_flops: float) -> dict:
    step_time = statistics.median(times)
    tokens_per_s = cfg.batch_size * cfg.block_size / step_time
    return {
        "step_time_s": step_time,
        "step_times_s": times,
        "tokens_per_s": tokens_per_s,
        "mfu": model.flops_per_token(cfg.block_size) * tokens_per_s / peak_flops,
    }


def memory_summary(
    model: GPT, forward: torch.nn.Module, step: StepFunction, batch: tuple[Tensor, Tensor],
    device: torch.device, dtype: torch.dtype,
) -> dict:
    saved = model_saved_bytes(model, forward, batch, device, dtype)
    cuda_peak = cuda_step_peak_bytes(step, batch, device) if device.type == "cuda" else None
    return {
        "saved_bytes": saved,
        "cuda_peak_step_bytes": cuda_peak,
        "memory_bytes": cuda_peak if device.type == "cuda" else saved,
    }


def bench_mode(
    cfg: TrainConfig, opts: BenchOptions, vocab_size: int, device: torch.device, dtype: torch.dtype,
    compiled: bool, peak_flops: float,
) -> list[dict]:
    """Measure every MLP type in one mode (eager or compiled) and return one result per type."""
    models = {mlp: build_model(cfg, mlp, vocab_size, device) for mlp in opts.mlp_types}
    forwards = {mlp: torch.compile(model) if compiled else model for mlp, model in models.items()}
    steps = {mlp: make_step(cfg, models[mlp], forwards[mlp], device, dtype) for mlp in models}
    batches = [random_batch(cfg, vocab_size, device) for _ in range(opts.warmup + opts.steps)]
    if compiled:
        for step in steps.values():
            step(*batches[0])  # the first call compiles, so it is neither warm-up nor timed
    times = interleaved_step_times(steps, batches, opts.warmup, device)

    results = []
    for mlp, model in models.items():
        result = {"mlp": mlp, "mode": "compiled" if compiled else "eager", "n_params": model.num_params()}
        result.update(timing_summary(cfg, model, times[mlp], peak_flops))
        result.update(memory_summary(model, forwards[mlp], steps[mlp], batches[0], device, dtype))
        results.append(result)
    return results


def add_ratios(results: list[dict]) -> None:
    """Add each result's step time, tokens/s, MFU and memory relative to SwiGLU in the same mode."""
    baselines = {r["mode"]: r for r in results if r["mlp"] == BASELINE}
    for r in results:
        base = baselines.get(r["mode"])
        r["vs_swiglu"] = {
            key: (r[key] / base[key] if base and r[key] is not None and base[key] else None)
            for key in ("step_time_s", "tokens_per_s", "mfu", "memory_bytes")
        }
        r["step_time_vs_swiglu_per_round"] = paired_ratio_spread(r["step_times_s"], base["step_times_s"]) if base else None


def paired_ratio_spread(times: list[float], base_times: list[float]) -> dict:
    """Return the median and the 10th and 90th percentiles of times[i] / base_times[i].

    Step i of every MLP type ran in the same round on the same batch, so these per-round ratios show how
    much the ratio of the medians could move with machine noise.
    """
    ratios = sorted(t / b for t, b in zip(times, base_times))
    deciles = statistics.quantiles(ratios, n=10) if len(ratios) > 1 else ratios * 9
    return {"median": statistics.median(ratios), "p10": deciles[0], "p90": deciles[-1]}


def time_generation(model: GPT, n_tokens: int, use_cache: bool, device: torch.device) -> tuple[float, Tensor]:
    """Return the seconds that greedy generation of n_tokens from a one-token prompt takes, and its ids."""
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    synchronize(device)
    start = time.perf_counter()
    ids = model.generate(prompt, n_tokens, temperature=0, use_cache=use_cache)
    synchronize(device)
    return time.perf_counter() - start, ids


def bench_sampling(
    cfg: TrainConfig, vocab_size: int, device: torch.device, dtype: torch.dtype, n_tokens: int
) -> dict:
    """Time greedy generation with and without the KV cache, for n_tokens and for one full context.

    Past block_size ids the cached path refills its cache once per context-window restart (see
    model.context_start), so n_tokens > block_size includes those prefills. The second measurement
    generates block_size - 1 ids, all of them within the first window.
    """
    model = build_model(cfg, cfg.mlp, vocab_size, device).eval()
    report: dict = {"mlp": cfg.mlp, "block_size": cfg.block_size}
    with autocast_for(device, dtype):
        for use_cache in (False, True):
            time_generation(model, 4, use_cache, device)  # warm-up
        for name, length in (("new_tokens", n_tokens), ("context_tokens", cfg.block_size - 1)):
            no_cache_s, no_cache_ids = time_generation(model, length, False, device)
            cache_s, cache_ids = time_generation(model, length, True, device)
            report[name] = {
                "tokens": length,
                "tokens_per_s_without_cache": length / no_cache_s,
                "tokens_per_s_with_cache": length / cache_s,
                "speedup": no_cache_s / cache_s,
                "same_tokens": bool(torch.equal(no_cache_ids, cache_ids)),
            }
    return report


def check_train_loop(cfg: TrainConfig, opts: BenchOptions) -> None:
    """Raise UserError before any measurement if --train_loop cannot run with these settings."""
    if cfg.mlp not in opts.mlp_types:
        raise UserError(f"--train_loop measures mlp={cfg.mlp!r}, which --mlp leaves out; add {cfg.mlp} to --mlp")
    load_meta(data_dir_for(cfg), cfg.dataset)


def bench_train_loop(cfg: TrainConfig, opts: BenchOptions, results: list[dict]) -> dict:
    """Run train.py's loop for warmup + steps updates and compare its tokens/s with the eager step's.

    The loop trains cfg.mlp on the prepared dataset with one micro-batch per update and logs every update.
    It evaluates one validation window at its first and last step only, and evaluation time is outside
    the logged throughput. Unlike the benchmarked step, each update also reads a batch from the memory-mapped
    data, clips the gradient norm when grad_clip > 0 and syncs once with the host. The median over the
    updates after warm-up is compared.
    """
    step_result = next(r for r in results if r["mlp"] == cfg.mlp and r["mode"] == "eager")
    tokens_per_step = cfg.batch_size * cfg.block_size
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out_dir:
        run_cfg = dataclasses.replace(
            cfg, out_dir=out_dir, init_from="scratch", overwrite=True, compile=False, wandb_log=False,
            max_iters=opts.warmup + opts.steps, gradient_accumulation_steps=1, log_interval=1,
            eval_steps=[], eval_interval=0, eval_tokens=cfg.block_size, checkpoint_interval=0, keep_last=0,
        )
        with redirect_stdout(io.StringIO()):
            train.train(run_cfg)
        with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
    step_times = [tokens_per_step / r["tokens_per_s"] for r in records if "tokens_per_s" in r][opts.warmup :]
    step_time = statistics.median(step_times)
    return {
        "mlp": cfg.mlp,
        "dataset": cfg.dataset,
        "step_time_s": step_time,
        "step_times_s": step_times,
        "tokens_per_s": tokens_per_step / step_time,
        "bench_tokens_per_s": step_result["tokens_per_s"],
        "ratio_to_bench": step_result["step_time_s"] / step_time,
    }


# -----------------------------------------------------------------------------
# report


def machine_info(device: torch.device) -> dict:
    info = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "os_cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_spread(spread: dict | None) -> str:
    return "-" if spread is None else f"{spread['p10']:.3f}-{spread['p90']:.3f}"


def format_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.2f} MiB"


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| MLP | mode | step ms | tokens/s | MFU | memory | step time vs swiglu | per-round p10-p90 "
        "| tokens/s vs swiglu | memory vs swiglu |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratios = r["vs_swiglu"]
        lines.append(
            f"| {r['mlp']} | {r['mode']} | {r['step_time_s'] * 1e3:.2f} | {r['tokens_per_s']:,.0f} | "
            f"{r['mfu']:.3f} | {format_bytes(r['memory_bytes'])} | {format_ratio(ratios['step_time_s'])} | "
            f"{format_spread(r['step_time_vs_swiglu_per_round'])} | "
            f"{format_ratio(ratios['tokens_per_s'])} | {format_ratio(ratios['memory_bytes'])} |"
        )
    return "\n".join(lines)


def sampling_summary(sample: dict) -> str:
    lines = [f"generation from a one-token prompt ({sample['mlp']}, block_size {sample['block_size']}, greedy):"]
    for name in ("new_tokens", "context_tokens"):
        r = sample[name]
        lines.append(
            f"  {r['tokens']} new tokens: {r['tokens_per_s_without_cache']:,.1f} tokens/s without the KV cache, "
            f"{r['tokens_per_s_with_cache']:,.1f} with it, speed-up {r['speedup']:.2f}x, "
            f"same tokens: {r['same_tokens']}"
        )
    return "\n".join(lines)


def train_loop_summary(loop: dict) -> str:
    return (
        f"train.py loop ({loop['mlp']}, {loop['dataset']}): {loop['tokens_per_s']:,.0f} tokens/s, "
        f"{loop['ratio_to_bench']:.3f} of the benchmarked eager step's {loop['bench_tokens_per_s']:,.0f}"
    )


def run_bench(argv: list[str]) -> dict:
    """Run the benchmark, print a markdown table, write the JSON report and return it."""
    opts, settings_args = split_args(argv)
    cfg = parse_args(settings_args)
    device = pick_device(cfg.device, 0)
    dtype = pick_dtype(cfg.dtype, device)
    if opts.train_loop:
        check_train_loop(cfg, opts)
    vocab_size, vocab_source = vocab_size_for(cfg)
    peak_flops = measure_matmul_flops(device, dtype)

    results = bench_mode(cfg, opts, vocab_size, device, dtype, False, peak_flops)
    compile_error = None
    if cfg.compile:
        try:
            results += bench_mode(cfg, opts, vocab_size, device, dtype, True, peak_flops)
        except Exception as e:  # torch.compile fails with many exception types (no compiler, backend errors)
            compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"warning: torch.compile failed, so only eager mode was measured ({compile_error})", file=sys.stderr)
    add_ratios(results)
    sample = bench_sampling(cfg, vocab_size, device, dtype, opts.sample_tokens) if opts.sample else None
    loop = bench_train_loop(cfg, opts, results) if opts.train_loop else None

    report = {
        "command": shlex.join([os.path.basename(sys.executable), "bench.py", *argv]),
        "argv": argv,
        "machine": machine_info(device),
        "dtype": str(dtype).removeprefix("torch."),
        "settings": cfg.to_dict(),
        "vocab_size": vocab_size,
        "vocab_size_source": vocab_source,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "tokens_per_step": cfg.batch_size * cfg.block_size,
        "matmul_peak_flops": peak_flops,
        "memory_kind": "cuda_peak_step_bytes" if device.type == "cuda" else "saved_bytes",
        "compile_error": compile_error,
        "results": results,
        "sample": sample,
        "train_loop": loop,
    }
    print(markdown_table(results))
    if sample:
        print(sampling_summary(sample))
    if loop:
        print(train_loop_summary(loop))
    if os.path.dirname(opts.json_path):
        os.makedirs(os.path.dirname(opts.json_path), exist_ok=True)
    with open(opts.json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {opts.json_path}")
    return report


def main() -> None:
    argv = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        print(__doc__)
        return
    try:
        run_bench(argv)
    except UserError as e:
        report_user_error(e, 2)


if __name__ == "__main__":
    main()
