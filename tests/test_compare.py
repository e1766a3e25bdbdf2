import json
import math
import subprocess

import pytest

import compare
from conftest import PYTHON, REPO, subprocess_env, tiny_args

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def write_run(grid, variant, seed, ppl_by_step, max_iters=34300, n_params=1000):
    run_dir = grid / f"{variant}-s{seed}"
    run_dir.mkdir(parents=True)
    info = {"train_config": {"mlp": variant, "seed": seed, "max_iters": max_iters, "eval_steps": [5620, 34300]},
            "n_params": n_params}
    (run_dir / "run.json").write_text(json.dumps(info))
    lines = [{"step": s, "val_loss": math.log(p), "val_ppl": p} for s, p in sorted(ppl_by_step.items())]
    if variant == "dynactglu":
        for line in lines:
            line.update(alpha=[1.0, 0.9], beta=[0.0, 0.1])
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


@pytest.fixture
def grid(tmp_path):
    swiglu = {0: 4.5, 1: 4.6, 2: 4.4}
    dyn = {0: 4.0, 1: 4.2, 2: 4.1}
    for seed in range(3):
        write_run(tmp_path, "swiglu", seed, {5620: swiglu[seed], 34300: 3.0 + seed / 10})
        at_late = {34300: [3.05, 3.08][seed]} if seed != 2 else {}  # seed 2 never reached step 34300
        write_run(tmp_path, "dynactglu", seed, {5620: dyn[seed], **at_late}, n_params=1012)
        write_run(tmp_path, "geglu", seed, {5620: 4.3})  # no step 34300 at all
    return tmp_path


def rows_for(grid, step):
    runs = compare.load_runs(grid)
    return {r.variant: r for r in compare.summarize(step, compare.ppl_table(runs, step, False), {}, 3)}


def test_report_arithmetic(grid):
    rows = rows_for(grid, 5620)
    dyn = rows["dynactglu"]
    assert dyn.ppl_mean == pytest.approx(4.1)
    assert dyn.ppl_std == pytest.approx(0.1)
    assert rows["swiglu"].ppl_mean == pytest.approx(4.5)
    assert dyn.reduction == pytest.approx((4.5 - 4.1) / 4.5)
    # paired differences -0.5, -0.4, -0.3: mean -0.4, sample std 0.1
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert dyn.diff_mean == pytest.approx(-0.4)
    assert dyn.diff_low == pytest.approx(-0.4 - half)
    assert dyn.diff_high == pytest.approx(-0.4 + half)
    assert dyn.paired == 3
    assert dyn.paper_ppl == 4.047
    assert rows["swiglu"].paper_ppl == 4.514


def test_t_interval_needs_two_values():
    assert compare.t_interval([1.0]) is None
    mean, low, high = compare.t_interval([1.0, 2.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - T_975_DF2 / math.sqrt(3), 2.0 + T_975_DF2 / math.sqrt(3)))


def test_missing_seed_is_counted_not_averaged(grid):
    rows = rows_for(grid, 34300)
    dyn = rows["dynactglu"]
    assert dyn.seeds == [0, 1]
    assert dyn.paired == 2
    assert dyn.ppl_mean == pytest.approx((3.05 + 3.08) / 2)
    assert dyn.diff_mean == pytest.approx(((3.05 - 3.0) + (3.08 - 3.1)) / 2)
    assert compare.row_cells(dyn)[2] == "2/3"
    assert compare.row_cells(rows["geglu"])[2:4] == ["0/3", "no step 34300"]


def test_report_files_and_verdicts(grid):
    text = compare.write_report(grid, compare.load_runs(grid), use_reeval=False)
    assert "| dynactglu | 1,012 | 3/3 | 4.100 ± 0.100 | +8.89% |" in text
    assert "no step 34300" in text
    assert "Claim 1 (dynActGLU lower than SwiGLU at step 5620, paper: 10.3%): held" in text
    assert "Claim 2 (no gap at step 34300): consistent" in text
    assert "checkpoint inside a 34300-step schedule" in text
    # alpha [1.0, 0.9] and beta [0.0, 0.1] in every dynactglu line: shares 0 and 0.1 / (0.8 + 0.1)
    assert "| 0 | 1.000 | 0.000 | 1.000 | 0.000 |" in text
    assert "| 1 | 0.900 | 0.100 | 0.800 | 0.111 |" in text
    csv_lines = (grid / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,reading,variant")
    assert len(csv_lines) == 1 + 3 + 3
    plots = compare.write_plots(grid, compare.load_runs(grid))
    assert [p.name for p in plots] == ["val_ppl.png", "dynact_vs_step.png", "dynact_vs_depth.png"]
    assert all(p.stat().st_size > 1000 for p in plots)


def run_compare(*args):
    return subprocess.run([PYTHON, str(REPO / "compare.py"), *args], capture_output=True, text=True,
                          env=subprocess_env(), cwd=REPO, timeout=300)


def test_grid_skips_finished_runs_and_reeval_is_stable(data_root, tmp_path):
    out = tmp_path / "grid"
    settings = tiny_args(data_root, tmp_path / "unused", max_iters=6, eval_steps=[3, 6])
    settings = [a for a in settings if not a.startswith("--out_dir=")]
    first = run_compare("run", "--variants", "swiglu", "dynactglu", "--seeds", "0", "1", f"--out={out}", *settings)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dynactglu-s0", "dynactglu-s1", "swiglu-s0", "swiglu-s1"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/ckpt.pt")}

    second = run_compare("run", "--variants", "swiglu", "dynactglu", "--seeds", "0", "1", f"--out={out}", *settings)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished, skipped") == 4
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*/ckpt.pt")}

    runs = compare.load_runs(out)
    compare.reevaluate(runs[0], "cpu")
    first_pass = dict(runs[0].reeval)
    compare.reevaluate(runs[0], "cpu")
    assert sorted(first_pass) == [3, 6]
    assert runs[0].reeval == first_pass

    report = run_compare("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "## Step 6 (end of a 6-step schedule)" in report.stdout
    assert (out / "report.md").exists()
    assert (out / "val_ppl.png").exists()


def test_grid_resumes_interrupted_run(data_root, tmp_path):
    out = tmp_path / "grid"
    # lr_decay_iters=4 in both runs, so the 2-step run is the start of the 4-step one
    settings = tiny_args(data_root, tmp_path, max_iters=4, lr_decay_iters=4, eval_steps=[2, 4])
    settings = [a for a in settings if not a.startswith("--out_dir=")]
    short = [a if not a.startswith("--max_iters") else "--max_iters=2" for a in settings]
    short = [a if not a.startswith("--eval_steps") else "--eval_steps=[2]" for a in short]
    assert run_compare("run", "--variants", "swiglu", "--seeds", "0", f"--out={out}", *short).returncode == 0
    result = run_compare("run", "--variants", "swiglu", "--seeds", "0", f"--out={out}", *settings)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert "resuming from" in (out / "swiglu-s0" / "train.log").read_text()


def test_grid_rejects_changed_schedule(data_root, tmp_path):
    out = tmp_path / "grid"
    settings = [a for a in tiny_args(data_root, tmp_path, max_iters=2, eval_steps=[2]) if not a.startswith("--out_dir=")]
    assert run_compare("run", "--variants", "swiglu", "--seeds", "0", f"--out={out}", *settings).returncode == 0
    longer = [a for a in settings if not a.startswith(("--max_iters", "--eval_steps"))] + ["--max_iters=4", "--eval_steps=[4]"]
    mtime = (out / "swiglu-s0" / "ckpt.pt").stat().st_mtime_ns
    result = run_compare("run", "--variants", "swiglu", "--seeds", "0", f"--out={out}", *longer)
    assert result.returncode == 2
    assert "lr_decay_iters: checkpoint 2 vs now 4" in result.stderr
    assert "choose a new --out" in result.stderr
    assert (out / "swiglu-s0" / "ckpt.pt").stat().st_mtime_ns == mtime


def test_run_rejects_per_run_settings():
    result = run_compare("run", "--variants", "swiglu", "--out=/tmp/never", "--mlp=gelu")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --mlp, --seed and --out_dir are set per run")
