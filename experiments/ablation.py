"""Table 3 on SynthAU with several seeds: phase 1 once per seed, then each model per seed.

    python -m experiments.ablation                       # source_only, A, B, C; seeds 0, 1, 2
    python -m experiments.ablation --seeds=5 --out=runs/ablation5
    python -m experiments.ablation --models=C --label=C_self --lambda_self=3   # a variant

Every run is `python -m experiments.run --flagfile=quickstart.flags ...` in OUT/pretrain/seed<k>
(phase 1) or OUT/<label>/seed<k> (phase 2), so each can be re-run or inspected on its own: the
quick start's settings (its --phase, --model and --workdir overridden), so that the C runs of seed
0 are the quick start itself and the seeds give the quick start's spread. Loss weights that the
flag file sets after its own --model are that model's settings (the quick start's --lambda_adf=12
is C's): its runs get them, the other models keep their presets. Flags this script does not know go
to every phase-2 run after its --model, so they override the model's preset and the flag file
(`--lambda_self=3`, `--lr_disc=1e-4`, ...); phase 1 is shared by all labels of OUT, so flags that
change the networks' shapes need their own --out. A run that has results.json is skipped and an
interrupted one resumes, so the same command finishes an interrupted ablation. At the end the table
of `experiments.table` is printed and written to OUT/table.md.

The seed drives model initialisation, data order and augmentation; SynthAU itself is generated
once (--synth_seed) and shared by all seeds.
"""

import argparse
import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

from audjax.config import MODELS
from audjax.files import atomic_write
from audjax.tools import malloc as hostmem
from experiments import table
from experiments.run import FLAGS, preset_overrides, resolve_flagfiles


def run(args: list[str], log: Path) -> None:
    """One experiments.run call, its output to `log`; raises with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.call([sys.executable, "-m", "experiments.run", *args], stdout=out,
                               stderr=subprocess.STDOUT)
    tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
    if code:
        raise RuntimeError(f"failed ({code}): {' '.join(args)}\n{tail}")
    print(f"done in {time.perf_counter() - start:.0f} s: {log.parent}", flush=True)


def flagfile_settings(flagfile: str, model: str) -> list[str]:
    """The loss weights (and transplant) that `flagfile` sets after its --model, when that
    --model is `model`: the ablation's own --model would reset them to the preset."""
    args = resolve_flagfiles([f"--flagfile={flagfile}"])
    named = [a.split("=", 1)[1] for a in FLAGS.read_flags_from_files(args, force_gnu=False)
             if a.startswith("--model=")]
    return list(preset_overrides(args).values()) if named and named[-1] == model else []


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation", description=__doc__.split("\n\n")[0],
        epilog="Other --flags go to every phase-2 run (after --model).")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--label", default="",
                        help="directory name of the runs (default: the model); one model only")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--flagfile", default="quickstart.flags",
                        help="settings shared by every run (phase 1 and 2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (results do not depend on it)")
    args, extra = parser.parse_known_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        parser.error(f"--models={args.models}: expected a comma-separated subset of {MODELS}")
    if args.label and len(models) != 1:
        parser.error("--label names the runs of one model: give one --models")
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    bad = [x for x in extra if not x.startswith("--")]
    if bad:
        parser.error(f"unexpected arguments {bad}")

    out = Path(args.out)
    common = [f"--flagfile={args.flagfile}"]
    seeds = range(args.seeds)
    own = {m: flagfile_settings(args.flagfile, m) for m in models}
    for m in models:
        if own[m]:
            print(f"{m}: {' '.join(own[m])} from {args.flagfile}", flush=True)

    def pretrain(seed):
        workdir = out / "pretrain" / f"seed{seed}"
        if not (workdir / "results.json").exists():
            run([*common, "--phase=pretrain", f"--seed={seed}", f"--workdir={workdir}"],
                workdir / "log.txt")

    def joint(model, seed):
        workdir = out / (args.label or model) / f"seed{seed}"
        if (workdir / "results.json").exists():
            return
        # Every model gets the phase-1 run: those with the transplant on start from it.
        init = f"--init_from={out / 'pretrain' / f'seed{seed}'}"
        run([*common, "--phase=joint", f"--seed={seed}", f"--workdir={workdir}", init,
             f"--model={model}", *own[model], *extra], workdir / "log.txt")

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(pretrain, seeds))
        jobs = [pool.submit(joint, m, s) for s in seeds for m in models]
        for job in jobs:
            job.result()

    text = table.tables(table.collect(out, table.discover(out)))
    atomic_write(out / "table.md", text)
    print(text)


if __name__ == "__main__":
    hostmem.tune_malloc()  # inherited by the runs it starts
    main()
