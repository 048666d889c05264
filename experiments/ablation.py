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

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from audjax.cli.common import fail, parse
from audjax.config import MODELS
from audjax.files import atomic_write
from audjax.tools import malloc as hostmem
from experiments import table
from experiments.run import FLAGS, preset_overrides, resolve_flagfiles

PROG = "python -m experiments.ablation"
USAGE = ("[--seeds=N] [--models=A,B] [--label=NAME] [--out=DIR] [--flagfile=FILE] [--jobs=N] "
         "[--other_run_flags ...]")
# Its own flags, apart from experiments.run's (absl's global FLAGS, which names its flags too):
# no clash, and the flags it does not know pass through to the runs. --flagfile is absl's own
# (it would read the file), so it is taken out before parsing.
ABLATION = flags.FlagValues()
flags.DEFINE_integer("seeds", 3, "seeds 0 .. N-1", lower_bound=1, flag_values=ABLATION)
flags.DEFINE_list("models", list(MODELS), "comma-separated subset of " + ",".join(MODELS),
                  flag_values=ABLATION)
flags.DEFINE_string("label", "", "directory name of the runs (default: the model); one model "
                    "only", flag_values=ABLATION)
flags.DEFINE_string("out", "runs/ablation", "the ablation's directory", flag_values=ABLATION)
flags.DEFINE_integer("jobs", 1, "runs at a time (results do not depend on it)", lower_bound=1,
                     flag_values=ABLATION)
DEFAULT_FLAGFILE = "quickstart.flags"


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


def split_flagfile(argv) -> tuple[str, list[str]]:
    """(the last --flagfile=FILE, default quickstart.flags: settings shared by every run, phase
    1 and 2; the other arguments)."""
    flagfile, rest, args = DEFAULT_FLAGFILE, [], iter(argv)
    for arg in args:
        if arg.startswith("--flagfile="):
            flagfile = arg.split("=", 1)[1]
        elif arg == "--flagfile":
            flagfile = next(args, DEFAULT_FLAGFILE)
        else:
            rest.append(arg)
    return flagfile, rest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flagfile, argv = split_flagfile(argv)
    doc = (__doc__.split("\n\n")[0] + "\n\n--flagfile=FILE: settings shared by every run "
           f"(default {DEFAULT_FLAGFILE}). Other --flags go to every phase-2 run (after --model).")
    extra = parse(ABLATION, argv, PROG, USAGE, doc, positional=(0, None), known_only=True)
    args = ABLATION
    models = [m for m in args.models if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise fail(PROG, f"--models={','.join(args.models)}: expected a comma-separated subset "
                         f"of {','.join(MODELS)}")
    if args.label and len(models) != 1:
        raise fail(PROG, "--label names the runs of one model: give one --models")
    bad = [x for x in extra if not x.startswith("--")]
    if bad:
        raise fail(PROG, f"unexpected arguments {bad}")

    out = Path(args.out)
    common = [f"--flagfile={flagfile}"]
    seeds = range(args.seeds)
    own = {m: flagfile_settings(flagfile, m) for m in models}
    for m in models:
        if own[m]:
            print(f"{m}: {' '.join(own[m])} from {flagfile}", flush=True)

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
