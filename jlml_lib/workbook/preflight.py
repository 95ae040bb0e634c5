"""`jlml workbook --preflight`: a rehearsal of the workbook's training chain, in minutes (issue 19).

    jlml workbook --preflight --profile paper --device cuda \\
        --data-root market1501=/data/Market-1501-v15.09.15 --data-root cuhk03=/data/cuhk03_release ...

With the roots, profile and device of the real run, every training stage of notebooks 03-08 runs
for a few iterations (:data:`ITERATIONS`; the ablation switches :data:`ABLATION_ITERATIONS`) on the
real data and device, and is evaluated on a slice of its test set (``eval_limit``
:data:`EVAL_QUERIES`: the first queries and a gallery that keeps them evaluable). The stages go
through the calls the notebooks make (:func:`jlml_lib.workbook.launch.train`,
:func:`jlml_lib.workbook.steps.reid_pretraining`: one ``python -m jlml_lib.train`` subprocess
each), and each stage's ``final.pt`` starts the next as ``--init`` exactly as the workbook chains
them (§3 "Implementation"): ImageNet (03) -> CUHK03 labelled / detected (04), Market-1501 (05),
the ablation variants (08); ImageNet -> CUHK03+Market-1501 -> VIPeR (06) and GRID (07).

Nothing is written into ``runs/`` or ``results/``: the stages run in a temporary folder removed at
the end, or in ``--preflight-out DIR`` (kept: every stage's run folder and output). A failed stage
is reported in one line and the stages that need its checkpoint are skipped; the others still run.
The table at the end gives each stage's measured step time (the median of the logged steps after
the first, which carries the start-up) and the hours the real schedule would take: step time x
the profile's iterations (:func:`jlml_lib.engine.config.make_config`) x the runs the real notebook
trains (every split for the paper's protocol) -- an estimate, labelled with the steps it rests on.
Every run is tagged ``study=preflight``, so none of its records could ever fill a table cell.
"""
from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from jlml_lib.data.combined import COMBINED
from jlml_lib.data.cuhk03 import KINDS as CUHK03_IMAGES
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError, one_line
from jlml_lib.io import write_text
from jlml_lib.paths import RUNS, RunDir, repo_root
from jlml_lib.results.records import read_metrics
from jlml_lib.results.runs import read_log, read_summary
from jlml_lib.workbook import launch, steps
from jlml_lib.workbook.notebook import parameter_default

#: training iterations of each stage (the first step carries the start-up; the rest are measured)
ITERATIONS = 5
#: iterations of each ablation variant of 08: one measured step after the first
ABLATION_ITERATIONS = 2
#: queries evaluated per stage (``eval_limit``)
EVAL_QUERIES = 20
#: the settings every preflight stage adds: a log line per step (the step times), no progress bar,
#: the test-set slice, and the study tag that keeps its records out of every table
PREFLIGHT_OVERRIDES: dict[str, Any] = {"log_every": 1, "progress": False, "study": "preflight"}
#: the table written beside the stages in --preflight-out
TABLE_FILE = "preflight.md"
#: the notebooks' parameters the stages follow, besides the roots (runner.Plan.params)
PARAMS = ("profile", "device", "nproc", "seed")


@dataclass(frozen=True)
class Stage:
    """One training run of the workbook's chain, as its notebook launches it."""

    key: str                    # the table's name and the folder's, e.g. "04_cuhk03-labeled"
    notebook: str               # whose parameters it takes (profile, device, ...)
    dataset: str                # what it trains on (launch.train's dataset)
    upstream: str | None        # the stage whose final.pt is its --init (None: from scratch)
    iterations: int             # the preflight's
    pretraining: bool = False   # Table 4's "Pre-train" row under the paper profile (03)
    data_root: str | None = None
    roots: dict = field(default_factory=dict)       # the CUHK03+Market-1501 stage's two roots
    overrides: dict = field(default_factory=dict)   # the notebook's own settings for this run
    splits: bool = False        # the notebook trains one run per split (default_splits)


@dataclass
class Outcome:
    stage: Stage
    status: str                 # "passed", "failed", "skipped"
    line: str = ""              # the error's one line, or why it was skipped
    source: str = ""            # real / synthetic, from the run's summary
    step_s: float | None = None
    measured: int = 0           # steps the step time rests on
    real_iterations: int = 0
    real_runs: int = 1          # runs of the real notebook (splits)
    wall_s: float = 0.0

    @property
    def hours(self) -> float | None:
        if self.step_s is None:
            return None
        return self.step_s * self.real_iterations * self.real_runs / 3600


def stages(data_roots: Mapping[str, str], *, iterations: int = ITERATIONS,
           ablation_iterations: int = ABLATION_ITERATIONS) -> list[Stage]:
    """The workbook's training stages in the order they run, each with the upstream stage whose
    checkpoint starts it (the chains of ``runner.CHAIN_CHECKPOINTS`` and notebooks 06/07)."""
    imagenet = "03_imagenet"
    combined = "06_" + COMBINED
    out = [Stage(imagenet, "03_imagenet_pretraining", "imagenet", None, iterations, pretraining=True,
                 data_root=data_roots.get("imagenet"))]
    out += [Stage(f"04_cuhk03-{kind}", "04_cuhk03", "cuhk03", imagenet, iterations, splits=True,
                  data_root=data_roots.get("cuhk03"),
                  overrides={**steps.RUN_SETTINGS["04_cuhk03"], "data.images": kind})  # as 04 trains them
            for kind in CUHK03_IMAGES]
    out.append(Stage("05_market1501", "05_market", "market1501", imagenet, iterations,
                     data_root=data_roots.get("market1501"), overrides=steps.RUN_SETTINGS["05_market"]))
    out.append(Stage(combined, "06_viper", COMBINED, imagenet, iterations,
                     roots={f"{n}_root": data_roots.get(n) for n in ("cuhk03", "market1501")}))
    out += [Stage(f"{nb[:2]}_{name}", nb, name, combined, iterations, splits=True, data_root=data_roots.get(name))
            for nb, name in (("06_viper", "viper"), ("07_grid", "grid"))]
    out += [Stage(f"08_{variant}", "08_ablations", "market1501", imagenet, ablation_iterations,
                  data_root=data_roots.get("market1501"),
                  overrides={**switches, **steps.RUN_SETTINGS["08_ablations"]})  # as 08 trains them
            for variant, switches in steps.ABLATIONS.items()]
    return out


# ---------------------------------------------------------------- running one stage
def failure_line(text: str) -> str:
    """The one line of a failed training's output that says why: its last error line (the training
    CLI's ``jlml train: ...`` for a user error, a traceback's ``SomeError: ...`` for a bug)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines[1:] if launch.ERROR_LINE.match(line) and not line.startswith("Traceback")]
    return errors[-1] if errors else (lines[0] if lines else "failed without output")


def step_time(run_dir: Path) -> tuple[float | None, int]:
    """The median seconds per step of a run's log (one line per step), the first step (start-up:
    loader, kernels' first launch) left out when there are others; and how many steps it rests on."""
    log = read_log(RunDir(run_dir).first_run().path)
    if log.empty or not {"iteration", "wall_time_s"} <= set(log):
        return None, 0
    its, walls = [0, *log["iteration"].tolist()], [0.0, *log["wall_time_s"].tolist()]
    # seconds per iteration between consecutive log lines (log_every=1: one step each)
    steps_s = [(walls[k] - walls[k - 1]) / max(1, its[k] - its[k - 1]) for k in range(1, len(its))]
    measured = steps_s[1:] or steps_s
    return statistics.median(measured), len(measured)


def run_stage(stage: Stage, folder: Path, init: str | None, params: Mapping[str, Any],
              extra: Mapping[str, Any], eval_queries: int) -> Outcome:
    """Train ``stage`` in ``folder/<key>`` as its notebook would (output into ``<key>.log``)."""
    p = {k: params[k] if params.get(k) is not None else parameter_default(stage.notebook, k) for k in PARAMS}
    profile = steps.train_profile(p["profile"], pretraining=stage.pretraining)
    overrides = {"device": p["device"], "seed": p["seed"],  # what every notebook passes
                 **stage.overrides, **PREFLIGHT_OVERRIDES, "eval_limit": eval_queries, **extra}
    out = folder / stage.key
    outcome = Outcome(stage, "passed", real_iterations=make_config(profile).iterations)
    start = time.perf_counter()
    try:
        with open(folder / f"{stage.key}.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            if stage.dataset == COMBINED:
                steps.reid_pretraining(out, init=init, profile=p["profile"], iterations=stage.iterations,
                                       nproc=p["nproc"], overrides=overrides, **stage.roots)
            else:
                launch.train(stage.dataset, out, profile=profile, data_root=stage.data_root, init=init,
                             iterations=stage.iterations, nproc=p["nproc"], overrides=overrides,
                             splits="0" if stage.splits else None)  # the real run's first split
    except launch.TrainingFailed as exc:
        outcome.status, outcome.line = "failed", failure_line(str(exc))
    except Exception as exc:  # noqa: BLE001  (a stage's error is its row; later stages still run)
        outcome.status, outcome.line = "failed", f"{type(exc).__name__}: {one_line(exc)}"
    outcome.wall_s = time.perf_counter() - start
    if outcome.status == "passed":
        first = RunDir(out).first_run()
        outcome.source = read_summary(first.path).get("source", "")
        outcome.step_s, outcome.measured = step_time(out)
        if stage.splits and steps.default_splits(p["profile"], None) == "all":
            outcome.real_runs = int(read_metrics(first.path)["extra"]["num_splits"])
    return outcome


# ---------------------------------------------------------------- the whole chain
def check_out(out: str | Path) -> Path:
    """``--preflight-out``: a new or empty folder outside ``runs/`` and ``results/``."""
    path = Path(out).expanduser().resolve()
    for kept in (RUNS, "results"):
        if path.is_relative_to(repo_root() / kept):
            raise ConfigError(f"--preflight-out {out}: inside {kept}/, which a preflight never writes to; "
                              "name a folder elsewhere (e.g. /tmp/jlml-preflight).")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--preflight-out {out}: exists and is not an empty folder; name a new one.")
    return path


def run(params: Mapping[str, Any], data_roots: Mapping[str, str], *, out: str | Path | None = None,
        iterations: int = ITERATIONS, ablation_iterations: int = ABLATION_ITERATIONS,
        eval_queries: int = EVAL_QUERIES, overrides: Mapping[str, Any] | None = None,
        log: Callable[[str], Any] = print) -> int:
    """Every stage in order, then the table; 0 when every stage passed, else 1. ``params``: the
    workbook's ``--profile/--device/--nproc/--seed`` (absent: each notebook's default);
    ``overrides``: settings added to every stage (the tests' tiny images)."""
    folder = check_out(out) if out is not None else Path(tempfile.mkdtemp(prefix="jlml-preflight-"))
    folder.mkdir(parents=True, exist_ok=True)
    plan = stages(data_roots, iterations=iterations, ablation_iterations=ablation_iterations)
    shown = " ".join(f"--{k} {v}" for k, v in params.items() if k in PARAMS and v is not None)
    log(f"jlml workbook --preflight {shown}".rstrip() + f": {len(plan)} stages, {iterations} iterations each "
        f"({ablation_iterations} for 08's variants), test sets sliced to {eval_queries} queries, in {folder}")
    outcomes: dict[str, Outcome] = {}
    try:
        for i, stage in enumerate(plan, 1):
            up = outcomes.get(stage.upstream) if stage.upstream else None
            if up is not None and up.status != "passed":
                outcomes[stage.key] = Outcome(stage, "skipped", line=f"needs {stage.upstream}'s checkpoint")
                log(f"[{i}/{len(plan)}] {stage.key}: skipped ({stage.upstream} did not pass)")
                continue
            init = str(RunDir(folder / stage.upstream).final) if stage.upstream else None
            outcome = run_stage(stage, folder, init, params, overrides or {}, eval_queries)
            outcomes[stage.key] = outcome
            log(f"[{i}/{len(plan)}] {stage.key}: {outcome.status} in {outcome.wall_s:.0f} s"
                + (f": {outcome.line}" if outcome.line else ""))
        text = table(list(outcomes.values()))
        log(text)
        if out is not None:
            write_text(folder / TABLE_FILE, text + "\n")
            log(f"every stage's run folder and its output (<stage>.log) are kept in {folder}")
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(o.status == "passed" for o in outcomes.values()) else 1


def table(outcomes: list[Outcome]) -> str:
    """The Markdown table the preflight ends with, and the total of the estimates."""
    head = ["stage", "dataset", "start (init)", "result", "step time", "real schedule", "real hours (estimate)"]
    rows = []
    for o in outcomes:
        s = o.stage
        result = "passed" if o.status == "passed" else f"{o.status}: {o.line}"
        runs = f" x {o.real_runs} splits" if o.real_runs > 1 else ""
        rows.append([
            s.key, s.dataset + (f" ({o.source})" if o.source else ""),
            f"final.pt of {s.upstream}" if s.upstream else "scratch", result.replace("|", "\\|"),
            f"{o.step_s:.3f} s" if o.step_s is not None else "-",
            f"{o.real_iterations:,} it{runs}" if o.real_iterations else "-",
            f"{o.hours:.1f} h (from {o.measured} step{'s' * (o.measured != 1)})" if o.hours is not None else "-"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    known = [o.hours for o in outcomes if o.hours is not None]
    missing = sum(o.hours is None for o in outcomes)
    total = f"estimated real schedule: {sum(known):.1f} h for the {len(known)} measured stage(s)"
    return "\n".join(lines) + "\n\n" + total + (f"; {missing} stage(s) not measured" if missing else "")
