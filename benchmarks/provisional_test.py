"""Provisional test metrics of a leaderboard-style run still in progress: the state of its best validation epoch so
far (the one --compare keeps in ``progress/``), evaluated once on the test split. Selection stays on validation;
the figure is provisional until the run stops, and --compare's own record replaces it.

    python benchmarks/provisional_test.py DiffuRec benchmarks/results/diffurec_gap_beauty/lr_step10 \\
        --lr_step_size=10 --lr_gamma=0.1

Arguments: the model, the run's output folder, and the command-line overrides the run was started with. The
configuration is the leaderboard's (benchmarks/configs/leaderboard_beauty: shared.yaml and the model's file),
seed 2020 unless the overrides give --seed=N; the run's settings key must match its progress file, so a differing
configuration is an error.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(HERE, "configs", "leaderboard_beauty")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model_name, folder, overrides = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
    seed = int(next((o.split("=", 1)[1] for o in overrides if o.startswith("--seed=")), 2020))
    files = [os.path.join(CONFIGS, "shared.yaml")]
    if os.path.isfile(os.path.join(CONFIGS, f"{model_name}.yaml")):
        files.append(os.path.join(CONFIGS, f"{model_name}.yaml"))
    # RecBole's Config reads the command line: give it the run's own (comparison flags are not settings).
    sys.argv = ["run_recbole_diffusion.py", f"--compare={model_name}", "--dataset=beauty",
                f"--data_path={os.path.join(ROOT, '..', 'shared', 'datasets')}", f"--output_dir={folder}",
                "--keep_checkpoints=True", "--popularity_floor=False"] + overrides

    from recbole_diffusion.compare import progress_path, run_config, saved_best_weights, settings_key
    from recbole_diffusion.quick_start import build
    from recbole_diffusion.trainer import load_checkpoint

    config = run_config(model_name, "beauty", files, output_dir=folder, keep_checkpoints=True)
    config["seed"] = seed
    path = progress_path(folder, model_name, seed, settings_key(config))
    if not os.path.isfile(path):
        sys.exit(f"No run in progress with these settings: {path} does not exist. Pass the overrides the run "
                 f"was started with.")
    progress = load_checkpoint(path)
    _, _, _, test_data, model, trainer = build(config)
    model.load_state_dict(saved_best_weights(progress))
    model.load_other_parameter(progress["best"]["other"])
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False)
    print(f"{model_name} seed {seed}, {len(progress['curve'])} epochs done, best validation "
          f"{progress['best_valid_score']:.4f} at epoch {progress['best']['epoch'] + 1} (provisional); test: "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.items()) + f" ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
