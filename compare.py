"""Run MLP variants x seeds, then report validation perplexity against SwiGLU with confidence intervals.

    python compare.py run --variants swiglu dynactglu --seeds 0 1 2 config/shakespeare_char.py --out=runs/paper
    python compare.py report runs/paper [--reeval]

`run` trains every variant and seed into runs/NAME/<variant>-s<seed> with identical settings except `mlp`
and `seed`. A finished run is skipped and an interrupted one resumes from its ckpt.pt, so the same
command continues a grid after a crash or preemption. `report` reads each run's metrics.jsonl and writes
report.md, report.csv and PNG plots into runs/NAME.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from settings import ArgumentParser, TrainConfig, UserError, parse_args, report_user_error

REPO_ROOT = Path(__file__).resolve().parent
BASELINE = "swiglu"
VARIANT_ORDER = ("gelu", "swiglu", "geglu", "dynactglu")
# Validation perplexities from the dynActivation paper's abstract: dynActGLU 10.3% below SwiGLU at step
# 5620, and no gap left by step 34300 (the abstract gives no perplexities for that step).
PAPER_PPL = {5620: {"swiglu": 4.514, "dynactglu": 4.047}}
PAPER_NOTE = {5620: "dynActGLU 10.3% below SwiGLU", 34300: "no gap"}
EXIT_PREEMPTED = 75


# -----------------------------------------------------------------------------
# run: the grid


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def checkpoint_step(run_dir: Path, cfg: TrainConfig) -> int | None:
    """Return the step of run_dir's checkpoint, or None without one.

    Raise UserError when the checkpoint was trained with other schedule settings than cfg, because
    resuming it would mix two schedules in one run.
    """
    import train
    from checkpoint import load_checkpoint

    path = run_dir / "ckpt.pt"
    if not path.exists():
        return None
    ckpt = load_checkpoint(str(path))
    changes = train.resume_differences(ckpt["train_config"], cfg)
    if changes:
        raise UserError(
            f"{run_dir} was trained with other settings ({', '.join(changes)}); rerun with its settings "
            "or choose a new --out"
        )
    return int(ckpt["step"])


def plan_run(run_dir: Path, max_iters: int, saved_step: int | None) -> list[str] | None:
    """Return the extra train.py arguments that start or continue a run, or None when it is finished."""
    if saved_step is not None:
        return None if saved_step >= max_iters else ["--init_from=resume"]
    if (run_dir / "metrics.jsonl").exists():
        return ["--overwrite=True"]  # an earlier attempt stopped before its first checkpoint
    return []


def launch(train_args: list[str], run_dir: Path, nproc: int, threads: int) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    if nproc > 0:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        launcher = [sys.executable]
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(run_dir / "train.log", "a", encoding="utf-8")
    log.write(f"$ {' '.join(launcher[1:] + ['train.py'] + train_args)}\n")
    log.flush()
    return subprocess.Popen(
        launcher + [str(REPO_ROOT / "train.py"), *train_args], cwd=REPO_ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )


def run_grid(args: argparse.Namespace, train_args: list[str]) -> int:
    """Train every variant x seed that is not finished; return the exit code for the whole grid."""
    if any(a.startswith(("--mlp=", "--seed=", "--out_dir=")) for a in train_args):
        raise UserError("--mlp, --seed and --out_dir are set per run by compare.py; use --variants, --seeds and --out")
    out = Path(args.out)
    jobs = []
    for variant in args.variants:
        for seed in args.seeds:
            run_dir = out / run_name(variant, seed)
            run_args = [*train_args, f"--mlp={variant}", f"--seed={seed}", f"--out_dir={run_dir}"]
            cfg = parse_args(run_args)  # every run's settings are checked before the first one starts
            jobs.append((run_dir, run_args, cfg.max_iters, checkpoint_step(run_dir, cfg)))
    out.mkdir(parents=True, exist_ok=True)
    record_grid(out, args, train_args)

    stop = {"signal": None}
    running: list[tuple[Path, subprocess.Popen]] = []

    def forward(signum: int, frame: object) -> None:
        stop["signal"] = signum
        for _, proc in running:
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, forward)

    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    failed: list[str] = []
    preempted = False
    pending = list(jobs)
    start = time.time()
    while pending or running:
        while pending and len(running) < args.jobs and stop["signal"] is None:
            run_dir, run_args, max_iters, saved_step = pending.pop(0)
            extra = plan_run(run_dir, max_iters, saved_step)
            if extra is None:
                print(f"{run_dir}: finished, skipped", flush=True)
                continue
            print(f"{run_dir}: {'resuming' if extra == ['--init_from=resume'] else 'starting'}", flush=True)
            running.append((run_dir, launch(run_args + extra, run_dir, args.nproc_per_node, threads)))
        if stop["signal"] is not None:
            pending.clear()
        time.sleep(0.2)
        for item in list(running):
            run_dir, proc = item
            code = proc.poll()
            if code is None:
                continue
            running.remove(item)
            if code == 0:
                print(f"{run_dir}: done after {time.time() - start:.0f} s of grid time", flush=True)
            elif code == EXIT_PREEMPTED:
                preempted = True
                print(f"{run_dir}: stopped by a signal; rerun the same command to resume", flush=True)
            else:
                failed.append(str(run_dir))
                print(f"{run_dir}: failed with exit code {code}; see {run_dir / 'train.log'}", flush=True)
    update_grid_time(out, time.time() - start)
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}; fix the cause and rerun to continue", file=sys.stderr)
        return 1
    return EXIT_PREEMPTED if preempted or stop["signal"] is not None else 0


def record_grid(out: Path, args: argparse.Namespace, train_args: list[str]) -> None:
    """Append this invocation to out/grid.json: the command line, variants, seeds and settings."""
    path = out / "grid.json"
    grid = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    grid["invocations"].append({
        "command": "python compare.py " + " ".join(sys.argv[1:]),
        "variants": args.variants,
        "seeds": args.seeds,
        "train_args": train_args,
        "jobs": args.jobs,
        "nproc_per_node": args.nproc_per_node,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    path.write_text(json.dumps(grid, indent=2))


def update_grid_time(out: Path, seconds: float) -> None:
    path = out / "grid.json"
    grid = json.loads(path.read_text())
    grid["invocations"][-1]["wall_seconds"] = round(seconds, 1)
    path.write_text(json.dumps(grid, indent=2))


# -----------------------------------------------------------------------------
# report: statistics


@dataclass
class Run:
    variant: str
    seed: int
    path: Path
    n_params: int | None
    max_iters: int
    evals: dict[int, dict] = field(default_factory=dict)  # step -> evaluation record from metrics.jsonl
    reeval: dict[int, float] = field(default_factory=dict)  # step -> val loss on the whole val split


@dataclass
class Row:
    step: int
    variant: str
    n_params: int | None
    seeds: list[int]
    expected_seeds: int
    ppl_mean: float | None
    ppl_std: float | None
    reduction: float | None  # (PPL_swiglu - PPL) / PPL_swiglu, from the means
    diff_mean: float | None  # mean over paired seeds of PPL - PPL_swiglu
    diff_low: float | None
    diff_high: float | None
    paired: int
    paper_ppl: float | None


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """Return the mean and a Student-t confidence interval, or None with fewer than two values."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def summarize(step: int, ppl: dict[str, dict[int, float]], n_params: dict[str, int | None], expected_seeds: int) -> list[Row]:
    """Build one table row per variant for one step; ppl maps variant -> seed -> val PPL at that step.

    Variants or seeds without this step are absent from ppl. Each row then records how many seeds it
    averages, and the paired difference uses only the seeds present for both the variant and SwiGLU.
    """
    base = ppl.get(BASELINE, {})
    base_mean = float(np.mean(list(base.values()))) if base else None
    rows = []
    for variant in sorted(ppl, key=variant_sort_key):
        values = ppl[variant]
        seeds = sorted(values)
        mean = float(np.mean([values[s] for s in seeds])) if seeds else None
        std = float(np.std([values[s] for s in seeds], ddof=1)) if len(seeds) > 1 else None
        reduction = (base_mean - mean) / base_mean if base_mean and mean is not None else None
        paired = [s for s in seeds if s in base]
        diffs = [values[s] - base[s] for s in paired]
        interval = t_interval(diffs) if variant != BASELINE else None
        rows.append(Row(
            step=step, variant=variant, n_params=n_params.get(variant), seeds=seeds, expected_seeds=expected_seeds,
            ppl_mean=mean, ppl_std=std, reduction=reduction,
            diff_mean=float(np.mean(diffs)) if diffs and variant != BASELINE else None,
            diff_low=interval[1] if interval else None, diff_high=interval[2] if interval else None,
            paired=len(paired) if variant != BASELINE else 0,
            paper_ppl=PAPER_PPL.get(step, {}).get(variant),
        ))
    return rows


def variant_sort_key(variant: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER), variant)


# -----------------------------------------------------------------------------
# report: reading runs


def load_runs(grid_dir: Path) -> list[Run]:
    runs = []
    for run_dir in sorted(p for p in grid_dir.iterdir() if (p / "metrics.jsonl").exists()):
        info_path = run_dir / "run.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        cfg = info.get("train_config", {})
        variant, _, seed = run_dir.name.rpartition("-s")
        run = Run(
            variant=cfg.get("mlp", variant), seed=int(cfg.get("seed", seed or 0)), path=run_dir,
            n_params=info.get("n_params"), max_iters=int(cfg.get("max_iters", 0)),
        )
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    if "val_loss" in record:
                        run.evals[record["step"]] = record
        reeval_path = run_dir / "reeval.json"
        if reeval_path.exists():
            run.reeval = {int(k): v for k, v in json.loads(reeval_path.read_text())["val_loss"].items()}
        runs.append(run)
    if not runs:
        raise UserError(f"no runs with metrics.jsonl under {grid_dir}; run `python compare.py run ... --out={grid_dir}` first")
    return runs


REEVAL_PROTOCOL = (
    "each kept fixed-step checkpoint (ckpt_NNNNNN.pt) is evaluated in eval mode, float32, on the whole "
    "validation split cut into consecutive non-overlapping windows of block_size tokens (the remainder "
    "shorter than one window is left out); val PPL = exp(mean next-token cross-entropy)"
)


def reevaluate(run: Run, device: str) -> None:
    """Evaluate each fixed-step checkpoint of a run on the whole validation split; store run/reeval.json."""
    import torch

    import train
    from checkpoint import load_checkpoint
    from model import GPT, GPTConfig
    from token_data import open_split

    results: dict[int, float] = {}
    for ckpt_path in sorted(run.path.glob("ckpt_[0-9]*.pt")):
        ckpt = load_checkpoint(str(ckpt_path))
        cfg = TrainConfig(**ckpt["train_config"])
        cfg.eval_tokens = 0
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        dist_info = train.Distributed(device)
        model.to(dist_info.device)
        data_dir = train.data_dir_for(cfg)
        meta = train.load_meta(data_dir, cfg.dataset)
        val = open_split(data_dir, meta, "val", cfg.block_size, cfg.dataset)
        offsets = val.eval_windows(0, cfg.block_size)
        results[int(ckpt["step"])] = train.evaluate(model, val, offsets, cfg, dist_info, torch.autocast("cpu", enabled=False))
    (run.path / "reeval.json").write_text(json.dumps({"protocol": REEVAL_PROTOCOL, "val_loss": results}, indent=2))
    run.reeval = results


def reading_of(step: int, runs: list[Run]) -> str:
    """Say whether `step` ends the runs' schedule or is a checkpoint inside a longer one."""
    lengths = sorted({r.max_iters for r in runs if step in r.evals or step in r.reeval})
    if not lengths:
        return "not reached"
    if lengths == [step]:
        return f"end of a {step}-step schedule"
    return "checkpoint inside a " + " / ".join(f"{n}-step" for n in lengths) + " schedule"


def fixed_steps(runs: list[Run]) -> list[int]:
    steps: set[int] = set()
    for run in runs:
        info = json.loads((run.path / "run.json").read_text()) if (run.path / "run.json").exists() else {}
        steps.update(info.get("train_config", {}).get("eval_steps", []))
    return sorted(steps)


def ppl_table(runs: list[Run], step: int, use_reeval: bool) -> dict[str, dict[int, float]]:
    ppl: dict[str, dict[int, float]] = {r.variant: {} for r in runs}
    for run in runs:
        loss = run.reeval.get(step) if use_reeval else run.evals.get(step, {}).get("val_loss")
        if loss is not None:
            ppl[run.variant][run.seed] = math.exp(loss)
    return ppl


# -----------------------------------------------------------------------------
# report: writing


def seed_count(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def row_cells(row: Row) -> list[str]:
    if not row.seeds:
        return [row.variant, fmt(row.n_params, ","), f"0/{row.expected_seeds}", f"no step {row.step}", "–", "–", fmt(row.paper_ppl)]
    seeds = f"{len(row.seeds)}/{row.expected_seeds}"
    ppl = fmt(row.ppl_mean) + (f" ± {row.ppl_std:.3f}" if row.ppl_std is not None else "")
    if row.variant == BASELINE:
        reduction = "baseline"
    elif row.reduction is None:
        reduction = "–"
    else:
        reduction = f"{100 * row.reduction:+.2f}%"
    if row.variant == BASELINE:
        diff = "–"
    elif row.diff_low is None:
        diff = f"{fmt(row.diff_mean, '+.3f')} (n={row.paired}, no CI)" if row.diff_mean is not None else "no paired seeds"
    else:
        diff = f"{row.diff_mean:+.3f} [{row.diff_low:+.3f}, {row.diff_high:+.3f}] (n={row.paired})"
    return [row.variant, fmt(row.n_params, ","), seeds, ppl, reduction, diff, fmt(row.paper_ppl)]


def verdicts(rows_by_step: dict[int, list[Row]]) -> list[str]:
    """Return one line per claim of the dynActivation abstract (PAPER_PPL) saying whether it held here.

    A claim counts as shown only when the 95% confidence interval of the paired difference excludes 0.
    """
    lines = []
    dyn = {step: next((r for r in rows if r.variant == "dynactglu"), None) for step, rows in rows_by_step.items()}
    early, late = dyn.get(5620), dyn.get(34300)
    if early is None or early.diff_low is None:
        lines.append("- Claim 1 (dynActGLU has lower val PPL than SwiGLU at step 5620): not testable here "
                     "(needs step 5620 for both variants with at least 2 paired seeds).")
    else:
        ci = f"Δ = {early.diff_mean:+.3f} PPL, 95% CI [{early.diff_low:+.3f}, {early.diff_high:+.3f}], {100 * early.reduction:+.2f}% relative"
        if early.diff_high < 0:
            held = "held: dynActGLU's PPL is lower, and the interval excludes 0"
            if early.reduction is not None and early.reduction < 0.103 / 2:
                held += ", but the reduction is far smaller than the paper's 10.3%"
        elif early.diff_low > 0:
            held = "did not hold: dynActGLU's PPL is higher, and the interval excludes 0"
        else:
            held = "not shown: the interval includes 0, so no difference was detected"
        lines.append(f"- Claim 1 (dynActGLU lower than SwiGLU at step 5620, paper: 10.3%): {held} ({ci}).")
    if late is None or late.diff_low is None:
        lines.append("- Claim 2 (the gap vanishes by step 34300): not testable here "
                     "(needs step 34300 for both variants with at least 2 paired seeds).")
    else:
        ci = f"Δ = {late.diff_mean:+.3f} PPL, 95% CI [{late.diff_low:+.3f}, {late.diff_high:+.3f}]"
        if late.diff_low <= 0 <= late.diff_high:
            held = "consistent: the interval includes 0"
        else:
            held = "did not hold: a gap remains, and the interval excludes 0"
        lines.append(f"- Claim 2 (no gap at step 34300): {held} ({ci}).")
    return lines


def dynact_layer_table(runs: list[Run]) -> list[str]:
    """Return markdown lines with dynActGLU's alpha and beta per layer at the last step all its runs share.

    The linear share |beta| / (|alpha - beta| + |beta|) is the weight of the linear term beta * x relative to
    both terms of f(x) = (alpha - beta) * silu(x) + beta * x; it grows as a layer becomes more linear.
    """
    dyn = [r for r in runs if r.variant == "dynactglu" and any("alpha" in e for e in r.evals.values())]
    if not dyn:
        return []
    step = max(set.intersection(*({s for s, e in r.evals.items() if "alpha" in e} for r in dyn)))
    alpha = np.mean([r.evals[step]["alpha"] for r in dyn], axis=0)
    beta = np.mean([r.evals[step]["beta"] for r in dyn], axis=0)
    share = np.abs(beta) / (np.abs(alpha - beta) + np.abs(beta))
    lines = [
        f"## dynActGLU per layer at step {step} (mean over {seed_count(len(dyn))})", "",
        "Linear share = abs(beta) / (abs(alpha − beta) + abs(beta)), the weight of the linear term beta·x in "
        "f(x) = (alpha − beta)·silu(x) + beta·x; it grows as a layer becomes more linear.", "",
        "| layer | alpha | beta | alpha − beta | linear share |",
        "|---|---|---|---|---|",
    ]
    for layer in range(len(alpha)):
        lines.append(f"| {layer} | {alpha[layer]:.3f} | {beta[layer]:.3f} | {alpha[layer] - beta[layer]:.3f} | {share[layer]:.3f} |")
    return lines + [""]


def write_report(grid_dir: Path, runs: list[Run], use_reeval: bool) -> str:
    expected_seeds = len({r.seed for r in runs})
    steps = fixed_steps(runs)
    rows_by_step = {}
    for step in steps:
        ppl = ppl_table(runs, step, use_reeval)
        n_params = {r.variant: r.n_params for r in runs}
        rows_by_step[step] = summarize(step, ppl, n_params, expected_seeds)

    source = ("re-evaluation of the fixed-step checkpoints: " + REEVAL_PROTOCOL) if use_reeval else \
        "the evaluations logged during training (metrics.jsonl), on each run's fixed validation windows"
    lines = [
        f"# Validation perplexity: {', '.join(sorted({r.variant for r in runs}, key=variant_sort_key))}",
        "",
        f"Runs: `{grid_dir}`, {len(runs)} runs, seeds {sorted({r.seed for r in runs})}.",
        f"PPL source: {source}.",
        "Columns: val PPL mean ± sample std over seeds; reduction = (PPL_swiglu − PPL) / PPL_swiglu from the means; "
        "Δ = paired per-seed PPL − PPL_swiglu (negative: lower than SwiGLU) with a 95% Student-t interval over seeds.",
        "",
    ]
    header = ["variant", "params", "seeds", "val PPL", "reduction vs SwiGLU", "Δ vs SwiGLU [95% CI]", "paper PPL"]
    for step, rows in rows_by_step.items():
        note = PAPER_NOTE.get(step)
        lines += [f"## Step {step} ({reading_of(step, runs)})" + (f"; paper: {note}" if note else ""), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row_cells(row)) + " |" for row in rows]
        lines.append("")
    lines += ["## The paper's claims at this scale", ""] + verdicts(rows_by_step) + [""]
    lines += dynact_layer_table(runs)
    text = "\n".join(lines)
    (grid_dir / "report.md").write_text(text)

    with open(grid_dir / "report.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "reading", "variant", "n_params", "n_seeds", "expected_seeds", "seeds", "ppl_mean",
                         "ppl_std", "reduction_vs_swiglu", "diff_vs_swiglu_mean", "diff_ci95_low", "diff_ci95_high",
                         "paired_seeds", "paper_ppl", "ppl_source"])
        for step, rows in rows_by_step.items():
            for r in rows:
                writer.writerow([step, reading_of(step, runs), r.variant, r.n_params, len(r.seeds), r.expected_seeds,
                                 " ".join(map(str, r.seeds)), r.ppl_mean, r.ppl_std, r.reduction, r.diff_mean,
                                 r.diff_low, r.diff_high, r.paired, r.paper_ppl, "reeval" if use_reeval else "training"])
    return text


def write_plots(grid_dir: Path, runs: list[Run]) -> list[Path]:
    """Plot val PPL against step per variant, and dynActGLU's alpha and beta against step and depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    steps_marked = fixed_steps(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for variant in sorted({r.variant for r in runs}, key=variant_sort_key):
        group = [r for r in runs if r.variant == variant]
        steps = sorted(set.intersection(*(set(r.evals) for r in group)))
        if not steps:
            continue
        ppl = np.array([[math.exp(r.evals[s]["val_loss"]) for s in steps] for r in group])
        mean = ppl.mean(axis=0)
        ax.plot(steps, mean, label=f"{variant} (n={len(group)})")
        if len(group) > 1:
            ax.fill_between(steps, ppl.min(axis=0), ppl.max(axis=0), alpha=0.2)
    for step in steps_marked:
        ax.axvline(step, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("val PPL (mean over seeds; band: min to max)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    written.append(grid_dir / "val_ppl.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    dyn = [r for r in runs if r.variant == "dynactglu" and any("alpha" in e for e in r.evals.values())]
    if not dyn:
        return written
    steps = sorted(set.intersection(*(set(r.evals) for r in dyn)))
    alpha = np.array([[r.evals[s]["alpha"] for s in steps] for r in dyn]).mean(axis=0)  # (steps, layers)
    beta = np.array([[r.evals[s]["beta"] for s in steps] for r in dyn]).mean(axis=0)
    n_layer = alpha.shape[1]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True)
    for ax, values, name in zip(axes, (alpha, beta, alpha - beta), ("alpha", "beta", "alpha - beta")):
        for layer in range(n_layer):
            ax.plot(steps, values[:, layer], label=f"layer {layer}", color=plt.cm.viridis(layer / max(1, n_layer - 1)))
        ax.set_title(f"{name} (mean over {seed_count(len(dyn))})")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    written.append(grid_dir / "dynact_vs_step.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    layers = np.arange(n_layer)
    ax.plot(layers, alpha[-1], "o-", label="alpha")
    ax.plot(layers, beta[-1], "s-", label="beta")
    ax.plot(layers, alpha[-1] - beta[-1], "^-", label="alpha - beta (weight of the nonlinearity)")
    ax.set_xlabel("layer (0 = first)")
    ax.set_title(f"dynActGLU at step {steps[-1]} (mean over {seed_count(len(dyn))})")
    ax.set_xticks(layers)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    written.append(grid_dir / "dynact_vs_depth.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def report(args: argparse.Namespace) -> str:
    grid_dir = Path(args.grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"runs folder {grid_dir} not found; pass the --out folder of `compare.py run`")
    runs = load_runs(grid_dir)
    if args.reeval:
        for run in runs:
            reevaluate(run, args.device)
    text = write_report(grid_dir, runs, args.reeval)
    write_plots(grid_dir, runs)
    print(text)
    return text


# -----------------------------------------------------------------------------
# params: model sizes of the four MLP types


def params_table(train_args: list[str], vocab_size: int | None) -> str:
    """Return a markdown table of parameter counts and FLOPs per token for each MLP type."""
    import train
    from model import GPT, MLP_TYPES

    cfg = parse_args(train_args)
    if vocab_size is None:
        vocab_size = train.load_meta(train.data_dir_for(cfg), cfg.dataset)["vocab_size"]
    lines = [
        f"n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, block_size={cfg.block_size}, vocab_size={vocab_size}",
        "",
        "| MLP | hidden | MLP params per layer | params | non-embedding params | training FLOPs per token |",
        "|---|---|---|---|---|---|",
    ]
    for mlp in MLP_TYPES:
        cfg.mlp = mlp
        model = GPT(cfg.model_config(vocab_size))
        per_layer = sum(p.numel() for p in model.blocks[0].mlp.parameters())
        lines.append(
            f"| {mlp} | {model.config.mlp_hidden} | {per_layer:,} | {model.num_params():,} | "
            f"{model.num_params(non_embedding=True):,} | {model.flops_per_token():,} |"
        )
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", allow_abbrev=False,
        help="train variants x seeds; other arguments (config files, --key=value) go to every train.py run",
    )
    # --variants and --seeds are read by take_list_options; they are declared here for --help.
    run.add_argument("--variants", nargs="+", default=["swiglu", "dynactglu"], help="MLP types to compare")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds, e.g. --seeds 0 1 2")
    run.add_argument("--out", required=True, help="grid folder, e.g. runs/paper; each run goes to <out>/<variant>-s<seed>")
    run.add_argument("--nproc_per_node", type=int, default=0, help="run each training under torchrun with this many processes")
    run.add_argument("--jobs", type=int, default=1, help="runs trained at once, each with an equal share of the CPU threads")
    par = commands.add_parser("params", allow_abbrev=False, help="print parameter counts of the four MLP types for a config")
    par.add_argument("--vocab_size", type=int, default=None, help="vocabulary size; default: from the prepared dataset")
    rep = commands.add_parser("report", allow_abbrev=False, help="write report.md, report.csv and plots for a grid folder")
    rep.add_argument("grid_dir")
    rep.add_argument("--reeval", action="store_true", help="re-evaluate every fixed-step checkpoint on the whole validation split")
    rep.add_argument("--device", default="cpu", help="device for --reeval")
    return parser


def take_list_options(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Remove `--variants A B ...` and `--seeds 0 1 ...` from argv and return their values.

    argparse's nargs="+" would also swallow the config files that follow the list, so each list ends at
    the first token that is not a known variant or an integer.
    """
    belongs = {"--variants": lambda t: t in VARIANT_ORDER or not (t.startswith("-") or t.endswith(".py")),
               "--seeds": lambda t: t.lstrip("-").isdigit()}
    rest: list[str] = []
    lists: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in belongs:
            values = []
            while i + 1 < len(argv) and belongs[token](argv[i + 1]):
                values.append(argv[i + 1])
                i += 1
            if not values:
                raise UserError(f"{token} needs at least one value; e.g. --variants swiglu dynactglu --seeds 0 1 2")
            lists[token] = values
        else:
            rest.append(token)
        i += 1
    return rest, lists


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        argv, lists = take_list_options(argv)
        args, rest = parser.parse_known_args(argv)
        if args.command == "run":
            args.variants = lists.get("--variants", args.variants)
            try:
                args.seeds = [int(s) for s in lists.get("--seeds", args.seeds)]
            except ValueError:
                raise UserError(f"--seeds takes integers, got {lists['--seeds']}; e.g. --seeds 0 1 2") from None
        if args.command == "params":
            print(params_table(rest, args.vocab_size))
            return 0
        if args.command == "report":
            if rest:
                raise UserError(f"unexpected arguments for report: {' '.join(rest)}; pass only the runs folder and --reeval")
            report(args)
            return 0
        if args.jobs < 1:
            raise UserError(f"--jobs={args.jobs} must be at least 1; pass --jobs=1 to train one run at a time")
        unknown = sorted(set(args.variants) - set(VARIANT_ORDER))
        if unknown:
            raise UserError(f"unknown variants {unknown}; use some of {', '.join(VARIANT_ORDER)}")
        return run_grid(args, rest)
    except UserError as e:
        report_user_error(e, 2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
