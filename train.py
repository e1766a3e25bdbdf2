"""Train a GPT with a GELU, SwiGLU, GeGLU or dynActGLU MLP, evaluating val perplexity at fixed steps.

    python train.py config/dynactglu.py config/cpu.py --seed=1
    torchrun --standalone --nproc_per_node=8 train.py config/dynactglu.py

Steps count optimizer updates. The global batch of the update that takes the model from step s to s + 1
is a pure function of (seed, s) and the same for any number of processes. Runs are therefore
reproducible, and a resumed run continues exactly. Evaluation at step s uses the model after s updates, on validation windows
that are the same for every run (see TokenSplit.eval_windows in token_data.py).

Exit codes: 0 finished, 2 invalid input (one `error:` line on stderr), 75 stopped by SIGTERM or SIGUSR1
after writing out_dir/ckpt.pt (resume with --init_from=resume).
"""

from __future__ import annotations

import gc
import glob
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import load_checkpoint, save_checkpoint
from model import GPT
from settings import TrainConfig, UserError, help_text, parse_args, report_user_error
from token_data import TokenSplit, data_dir_for, load_meta, open_split, windows_to_tensors

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the job is incomplete and can be resubmitted
# Dense bf16 tensor-core peaks from the vendors' data sheets, used for MFU when peak_flops is 0.
GPU_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


class NonFiniteLossError(Exception):
    """The training loss became NaN or Inf."""


# -----------------------------------------------------------------------------
# learning-rate schedule


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from learning_rate / (warmup_iters + 1) at step 0, then cosine decay to min_lr."""
    decay_iters = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


# -----------------------------------------------------------------------------
# disk space (token data is loaded by token_data.py)


def check_free_space(out_dir: str, n_params: int) -> None:
    """Raise UserError when out_dir cannot hold two checkpoints (a new one is written beside the old)."""
    # fp32 weights plus AdamW's two moments, with 10% for optimizer metadata and the rest of the checkpoint
    checkpoint_bytes = int(n_params * 4 * 3 * 1.1)
    free = shutil.disk_usage(out_dir).free
    if free < 2 * checkpoint_bytes:
        raise UserError(
            f"out_dir {out_dir!r} has {free / 2**20:.0f} MiB free, less than the {2 * checkpoint_bytes / 2**20:.0f} MiB "
            "that two checkpoints need; free disk space or choose another --out_dir"
        )


# -----------------------------------------------------------------------------
# system


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use --device=cpu or --device=auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device='mps' but MPS is not available here; use --device=cpu or --device=auto")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "float16" and device.type != "cuda":
        raise UserError(f"dtype=float16 needs CUDA, but device is {device}; use --dtype=float32 or bfloat16")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def measure_matmul_flops(
    device: torch.device, dtype: torch.dtype, size: int = 1024, reps: int = 5, trials: int = 5
) -> float:
    """Measure the FLOP/s of a square matrix multiply on device, a practical peak for MFU.

    The fastest of several trials counts, because other load on a shared machine only ever slows a trial.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def peak_flops_for(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> float:
    if cfg.peak_flops > 0:
        return cfg.peak_flops
    if device.type == "cuda" and dtype != torch.float32:
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops
    return measure_matmul_flops(device, dtype)


class Distributed:
    """The process's place in a torchrun job; a single process is rank 0 of 1."""

    def __init__(self, device_name: str) -> None:
        self.enabled = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.rank = int(os.environ.get("RANK", 0))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.device = pick_device(device_name, self.local_rank)
        if self.enabled:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        self.is_main = self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: object) -> list[object]:
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self, finished: bool) -> None:
        """Leave the process group; after a normal finish, wait for every process first.

        Without the barrier, a process that finishes early can tear down gloo while rank 0 is still
        writing the last checkpoint, and gloo then aborts that process on exit.
        """
        if self.enabled and dist.is_initialized():
            # DDP's reducer can sit in reference cycles. Collecting them now frees its gloo work while the
            # process group and the interpreter are still alive, instead of during interpreter shutdown.
            gc.collect()
            if finished:
                dist.barrier()
            dist.destroy_process_group()


class StopSignal:
    """Records SIGTERM or SIGUSR1 so that training stops after the current update."""

    def __init__(self) -> None:
        self.received: str | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name


def rng_state() -> dict:
    """Capture every random generator this process uses, as tensors and plain Python types."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# -----------------------------------------------------------------------------
# metrics


class MetricsLog:
    """Appends one JSON object per line to out_dir/metrics.jsonl and prints a readable line (rank 0 only)."""

    def __init__(self, path: str, enabled: bool, wandb_run: object = None) -> None:
        self.path = path
        self.enabled = enabled
        self.wandb_run = wandb_run

    def truncate_after(self, step: int) -> int:
        """Drop lines for steps after `step`, written by an interrupted run; return how many were dropped."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(lines) - len(kept)

    def write(self, record: dict, console: str) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(console, flush=True)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def start_wandb(cfg: TrainConfig) -> object:
    """Start a wandb run, or print one warning and return None when wandb cannot start."""
    try:
        import wandb

        return wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=cfg.to_dict())
    except Exception as e:  # wandb raises many types (import, auth, network); training goes on without it
        print(f"warning: wandb did not start ({type(e).__name__}: {e}); metrics still go to metrics.jsonl", file=sys.stderr)
        return None


# -----------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    val_tokens: TokenSplit,
    offsets: np.ndarray,
    cfg: TrainConfig,
    dist_info: Distributed,
    autocast: object,
) -> float:
    """Return the mean next-token cross-entropy over the fixed validation windows, in nats.

    Windows are split across processes. Each window's loss sum lands in its own slot, so the all-reduced
    total is the same as a single process computes.
    """
    model.eval()
    device = dist_info.device
    per_window = torch.zeros(len(offsets), dtype=torch.float64, device=device)
    mine = np.arange(dist_info.rank, len(offsets), dist_info.world_size)
    for start in range(0, len(mine), cfg.batch_size):
        index = mine[start : start + cfg.batch_size]
        x, y = windows_to_tensors(val_tokens, offsets[index], cfg.block_size, device)
        with autocast:
            logits, _ = model(x)
        losses = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
        )
        per_window[torch.from_numpy(index).to(device)] = losses.view(len(index), -1).double().sum(dim=1)
    dist_info.sum_(per_window)
    model.train()
    return (per_window.sum() / (len(offsets) * cfg.block_size)).item()


# -----------------------------------------------------------------------------
# checkpoints


def checkpoint_payload(
    raw_model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: TrainConfig,
    meta: dict, step: int, best_val_loss: float, rng_states: list[dict], world_size: int,
) -> dict:
    return {
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "model_config": raw_model.config.to_dict(),
        "train_config": cfg.to_dict(),
        "tokenizer": meta["tokenizer"],
        "step": step,
        "best_val_loss": best_val_loss,
        "rng": rng_states,
        "world_size": world_size,
    }


def check_out_dir(cfg: TrainConfig) -> list[str]:
    """Create out_dir and return the files of an earlier run that overwrite=True allows to replace.

    Starting from scratch over another run's checkpoints or metrics raises UserError unless overwrite=True.
    """
    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create out_dir {cfg.out_dir!r} ({e.strerror}); choose another --out_dir") from None
    if not os.access(cfg.out_dir, os.W_OK):
        raise UserError(f"out_dir {cfg.out_dir!r} is not writable; choose another --out_dir")
    if cfg.init_from != "scratch":
        return []
    existing = sorted(glob.glob(os.path.join(cfg.out_dir, "ckpt*.pt")))
    metrics = os.path.join(cfg.out_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        existing.append(metrics)
    if existing and not cfg.overwrite:
        raise UserError(
            f"out_dir {cfg.out_dir!r} already holds a run ({os.path.basename(existing[0])}); "
            "continue it with --init_from=resume, choose another --out_dir, or pass --overwrite=True to replace it"
        )
    return existing


def cpu_name() -> str:
    """Return the CPU model name (from /proc/cpuinfo on Linux), or the architecture elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_run_info(
    cfg: TrainConfig, raw_model: GPT, world: int, device: torch.device, dtype: torch.dtype, start_step: int
) -> None:
    """Write out_dir/run.json: the settings, model size and machine of the latest start of this run."""
    if device.type == "cuda":
        hardware = f"{world} x {torch.cuda.get_device_name(device)}"
    else:
        hardware = f"{cpu_name()}, {torch.get_num_threads()} threads x {world} processes"
    info = {
        "train_config": cfg.to_dict(),
        "model_config": raw_model.config.to_dict(),
        "n_params": raw_model.num_params(),
        "world_size": world,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "hardware": hardware,
        "os_cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "started_at_step": start_step,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = os.path.join(cfg.out_dir, "run.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    os.replace(path + ".tmp", path)


def prune_periodic(out_dir: str, keep_last: int) -> None:
    periodic = sorted(glob.glob(os.path.join(out_dir, "ckpt_periodic_*.pt")))
    for path in periodic[: max(0, len(periodic) - keep_last)]:
        os.remove(path)


# -----------------------------------------------------------------------------
# training


# Settings that a resumed run must share with its checkpoint, because every update depends on them. The
# model's shape is checked separately. max_iters may grow, because with lr_decay_iters unchanged the
# learning rate of every step already taken stays the same.
RESUME_SETTINGS = (
    "dataset", "seed", "batch_size", "gradient_accumulation_steps", "learning_rate", "min_lr",
    "warmup_iters", "lr_decay_iters", "beta1", "beta2", "weight_decay", "grad_clip",
)


def resume_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    """Return 'key: checkpoint X vs now Y' for each of RESUME_SETTINGS that differs from a checkpoint's train_config."""
    return [
        f"{key}: checkpoint {saved.get(key)!r} vs now {getattr(cfg, key)!r}"
        for key in RESUME_SETTINGS
        if saved.get(key) != getattr(cfg, key)
    ]


def train(cfg: TrainConfig) -> dict:
    """Run training as configured and return the last evaluation: step, val_loss and val_ppl."""
    dist_info = Distributed(cfg.device)
    finished = False
    try:
        result = run(cfg, dist_info)
        finished = True
        return result
    except SystemExit as e:
        finished = e.code == EXIT_PREEMPTED  # every process agreed to stop at the same step
        raise
    finally:
        dist_info.close(finished)


def run(cfg: TrainConfig, dist_info: Distributed) -> dict:
    device = dist_info.device
    world = dist_info.world_size
    if cfg.gradient_accumulation_steps % world != 0:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not divisible by the "
            f"{world} processes; make it a multiple of {world}"
        )
    local_accum = cfg.gradient_accumulation_steps // world
    dtype = pick_dtype(cfg.dtype, device)

    # data: checked before anything is written
    data_dir = data_dir_for(cfg)
    meta = load_meta(data_dir, cfg.dataset)
    train_tokens = open_split(data_dir, meta, "train", cfg.block_size, cfg.dataset)
    val_tokens = open_split(data_dir, meta, "val", cfg.block_size, cfg.dataset)
    val_offsets = val_tokens.eval_windows(cfg.eval_tokens, cfg.block_size)

    # model
    try:
        model_config = cfg.model_config(meta["vocab_size"])
    except ValueError as e:
        raise UserError(str(e)) from None
    torch.manual_seed(cfg.seed)
    raw_model = GPT(model_config).to(device)
    optimizer = raw_model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    start_step = 0
    best_val_loss = float("inf")
    resumed_rng = None
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(ckpt_path)
        differing = sorted(k for k, v in model_config.to_dict().items() if ckpt["model_config"].get(k) != v)
        if differing:
            detail = ", ".join(f"{k}: checkpoint {ckpt['model_config'].get(k)!r} vs now {getattr(model_config, k)!r}" for k in differing)
            raise UserError(f"model settings differ from the checkpoint {ckpt_path!r} ({detail}); pass the checkpoint's settings")
        schedule_changes = resume_differences(ckpt["train_config"], cfg)
        if schedule_changes:
            raise UserError(
                f"training settings differ from the checkpoint {ckpt_path!r} ({', '.join(schedule_changes)}), so the "
                "resumed run would follow another schedule; pass the checkpoint's values or train into a new out_dir"
            )
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_step = ckpt["step"]
        best_val_loss = ckpt["best_val_loss"]
        if ckpt.get("world_size") == world:
            resumed_rng = ckpt["rng"][dist_info.rank]
        del ckpt
    replaced = check_out_dir(cfg)  # every process checks, so all of them stop on the same error
    check_free_space(cfg.out_dir, raw_model.num_params())
    dist_info.barrier()
    if dist_info.is_main:
        for path in replaced:
            os.remove(path)

    if resumed_rng is not None:
        set_rng_state(resumed_rng)
    elif cfg.init_from == "resume" and dist_info.is_main:
        print(f"warning: checkpoint was written by a different number of processes; random states restart from seed {cfg.seed}", file=sys.stderr)
        torch.manual_seed(cfg.seed + dist_info.rank)
    else:
        torch.manual_seed(cfg.seed + dist_info.rank)  # dropout streams differ per process

    # fast_model serves evaluation, which needs no gradient sync; model adds DDP for training
    fast_model: torch.nn.Module = torch.compile(raw_model) if cfg.compile else raw_model
    model = fast_model
    if dist_info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DDP(fast_model, device_ids=device_ids)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    wandb_run = start_wandb(cfg) if cfg.wandb_log and dist_info.is_main else None
    metrics = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), dist_info.is_main, wandb_run)
    if cfg.init_from == "resume":
        dropped = metrics.truncate_after(start_step)
        if dist_info.is_main:
            print(f"resuming from {ckpt_path} at step {start_step}; dropped {dropped} metrics lines written after it")
            if start_step >= cfg.max_iters:
                print(f"the run already finished at step {start_step} (max_iters={cfg.max_iters}); nothing to do")

    tokens_per_step = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    peak = peak_flops_for(cfg, device, dtype) if dist_info.is_main else 0.0
    if dist_info.is_main:
        write_run_info(cfg, raw_model, world, device, dtype, start_step)
    flops_per_step = raw_model.flops_per_token(cfg.block_size) * tokens_per_step
    eval_steps = set(cfg.eval_steps)
    stop = StopSignal()
    if dist_info.is_main:
        print(
            f"{cfg.mlp}: {raw_model.num_params():,} parameters, {world} process(es), {device}, {dtype}, "
            f"{tokens_per_step:,} tokens per step, {len(val_offsets)} validation windows of {cfg.block_size}"
        )

    def save(step: int, extra_names: list[str]) -> None:
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            raise NonFiniteLossError(
                f"weights became non-finite by step {step}; the last good checkpoint is "
                f"{last_good(ckpt_path, saved_step)}; lower learning_rate or raise warmup_iters"
            )
        states = dist_info.gather_objects(rng_state())
        if not dist_info.is_main:
            return
        payload = checkpoint_payload(raw_model, optimizer, scaler, cfg, meta, step, best_val_loss, states, world)
        save_checkpoint(payload, ckpt_path)
        for name in extra_names:
            save_checkpoint(payload, os.path.join(cfg.out_dir, name))

    last_eval: dict = {}
    run_start = time.perf_counter()
    step = start_step
    saved_step = start_step if cfg.init_from == "resume" else -1
    stop_agreed = False  # set after each update from a sum over all processes, so all stop at the same step
    window_start = time.perf_counter()
    window_steps = 0
    while True:
        # evaluate and checkpoint at the top of the step, so a checkpoint always follows its evaluation
        is_eval = step in eval_steps or step == cfg.max_iters or (cfg.eval_interval and step % cfg.eval_interval == 0)
        if is_eval and saved_step != step:
            val_loss = evaluate(fast_model, val_tokens, val_offsets, cfg, dist_info, autocast)
            best_val_loss = min(best_val_loss, val_loss)
            last_eval = {"step": step, "val_loss": val_loss, "val_ppl": math.exp(val_loss)}
            record = dict(last_eval)
            console = f"step {step:6d} | val loss {val_loss:.4f} | val ppl {math.exp(val_loss):.3f}"
            alphas, betas = raw_model.dynact_parameters()
            if alphas:
                record.update(alpha=alphas, beta=betas)
                console += " | alpha " + " ".join(f"{a:.3f}" for a in alphas)
                console += " | beta " + " ".join(f"{b:.3f}" for b in betas)
            metrics.write(record, console)
            save(step, [f"ckpt_{step:06d}.pt"] if step in eval_steps else [])
            saved_step = step
            window_start = time.perf_counter()  # evaluation time does not count towards throughput
            window_steps = 0
        elif cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and saved_step != step and step > 0:
            save(step, [f"ckpt_periodic_{step:06d}.pt"] if cfg.keep_last else [])
            saved_step = step
            if dist_info.is_main and cfg.keep_last:
                prune_periodic(cfg.out_dir, cfg.keep_last)
        if step >= cfg.max_iters:
            break
        if stop_agreed:
            if saved_step != step:
                save(step, [])
            metrics.write(
                {"step": step, "event": "stopped", "signal": stop.received or "peer"},
                f"step {step:6d} | stopped by {stop.received or 'a signal to another process'}; wrote {ckpt_path}",
            )
            raise SystemExit(EXIT_PREEMPTED)

        # one optimizer update over gradient_accumulation_steps micro-batches, split across processes
        lr = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = train_tokens.sample_windows(
            cfg.seed, step, cfg.gradient_accumulation_steps * cfg.batch_size, cfg.block_size
        )
        loss_sum = torch.zeros((), device=device)
        for micro in range(local_accum):
            first = (dist_info.rank * local_accum + micro) * cfg.batch_size
            x, y = windows_to_tensors(train_tokens, offsets[first : first + cfg.batch_size], cfg.block_size, device)
            last_micro = micro == local_accum - 1
            # gradients are all-reduced on the last micro-step only
            with model.no_sync() if dist_info.enabled and not last_micro else nullcontext():
                with autocast:
                    _, loss = model(x, y)
                scaler.scale(loss / local_accum).backward()
            loss_sum += loss.detach()

        grad_norm = torch.zeros((), device=device)
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)

        # one host sync per update: the loss for the log, the stop request and the finiteness checks
        stop_flag = torch.tensor(1.0 if stop.received else 0.0, device=device)
        status = dist_info.sum_(torch.stack([loss_sum, stop_flag, grad_norm.float()]))
        loss_total, stop_count, norm_total = status.tolist()
        loss_value = loss_total / cfg.gradient_accumulation_steps
        stop_agreed = stop_count > 0
        # With float16, GradScaler skips updates whose gradients overflow, so only the loss is checked.
        gradients_bad = not math.isfinite(norm_total) and not scaler.is_enabled()
        if not math.isfinite(loss_value) or gradients_bad:
            what = f"training loss became {loss_value}" if not math.isfinite(loss_value) else "gradient norm became non-finite"
            raise NonFiniteLossError(
                f"{what} at step {step + 1}, before that update was applied; the last good checkpoint is "
                f"{last_good(ckpt_path, saved_step)}; lower learning_rate or raise warmup_iters"
            )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_steps += 1

        if step % cfg.log_interval == 0 or step == cfg.max_iters:
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * tokens_per_step / elapsed
            mfu = window_steps * flops_per_step / elapsed / peak if peak else None
            record = {
                "step": step, "train_loss": loss_value, "lr": lr, "tokens": step * tokens_per_step,
                "tokens_per_s": tokens_per_s, "mfu": mfu,
            }
            console = (
                f"step {step:6d} | loss {loss_value:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s | "
                f"{1000 * elapsed / window_steps:.1f} ms/step"
            )
            if mfu is not None:
                console += f" | mfu {100 * mfu:.1f}%"
            metrics.write(record, console)
            window_start = time.perf_counter()
            window_steps = 0

    if dist_info.is_main and step > start_step:
        summary = f"finished step {step} after {time.perf_counter() - run_start:.0f} s"
        if last_eval:
            summary += f"; val ppl {last_eval['val_ppl']:.3f} at step {last_eval['step']}"
        print(summary, flush=True)
    if wandb_run is not None:
        wandb_run.finish()
    return last_eval


def last_good(ckpt_path: str, saved_step: int) -> str:
    if saved_step < 0:
        return "none (no checkpoint was written yet)"
    return f"{ckpt_path} (step {saved_step})"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text())
        return
    try:
        train(parse_args(argv))
    except (UserError, NonFiniteLossError) as e:
        report_user_error(e, EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
