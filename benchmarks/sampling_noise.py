"""How much of a test figure is the sampler's noise? A diffusion model ranks with a random reverse chain, so one
trained model gives a different test score for each draw of that chain; a deterministic model (SASRec) gives one.
This evaluates each kept best model (``--compare --keep_checkpoints=True`` writes them to <output_dir>/checkpoints)
on the test split with several seeds of the sampler and prints, per model, the spread of its test metrics over those
draws beside the spread over training seeds in the leaderboard: a difference between two models smaller than a few
draws' standard deviation is the sampler's noise, not the models'.

    python benchmarks/sampling_noise.py [--draws=5] CHECKPOINT.pth [CHECKPOINT.pth ...]

Writes benchmarks/results/sampling_noise_<dataset>.md (the dataset of the first checkpoint).
"""

import os
import statistics
import sys
import time

from common import write_result

METRICS = ("ndcg@10", "hit@10", "ndcg@5")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--draws=")]
    draws = int(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--draws=")), 5))
    if not args or draws < 2:
        sys.exit(__doc__)

    import torch

    from recbole_diffusion.quick_start import load_data_and_model
    from recbole_diffusion.registry import get_trainer

    header = ["model", "checkpoint", "draws"] + [f"test {m} (mean ± std over draws)" for m in METRICS] + [
        "test NDCG@10 min - max", "s per draw"]
    lines = [f"Each kept best model evaluated on the test split {draws} times, with seeds 0-{draws - 1} for the "
             f"sampler: a diffusion model's start noise (its `eval_seed`, the run's seed, which fixes each user's x_T "
             f"and every other draw in evaluation, e.g. DiffuRec's lambda), metrics to 6 decimal "
             f"places; one thread.", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    dataset_name = None
    for path in args:
        config, model, _, _, _, test_data = load_data_and_model(path)
        dataset_name = dataset_name or config["dataset"]
        torch.set_num_threads(1)
        config["metric_decimal_place"] = 6  # RecBole rounds metrics to 4 places: finer, to see the draws differ
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        results, start = [], time.perf_counter()
        for draw in range(draws):
            torch.manual_seed(draw)  # a model without eval_seed draws from torch's generator
            if hasattr(model, "eval_seed"):  # ours seed every draw of an evaluation from eval_seed (x_T, lambda)
                model.eval_seed, model._start_noise_table = draw, None
            results.append(trainer.evaluate(test_data, load_best_model=False))
            print(f"{config['model']} draw {draw}: " + ", ".join(f"{m} {results[-1][m]:.6f}" for m in METRICS),
                  flush=True)
        seconds = (time.perf_counter() - start) / draws
        cells = [f"{statistics.mean(r[m] for r in results):.6f} ± {statistics.stdev(r[m] for r in results):.6f}"
                 for m in METRICS]
        ndcg = [r["ndcg@10"] for r in results]
        lines.append("| " + " | ".join([config["model"], os.path.basename(path), str(draws), *cells,
                                        f"{min(ndcg):.6f} - {max(ndcg):.6f}", f"{seconds:.0f}"]) + " |")
    write_result("sampling_noise", lines, tag=dataset_name)


if __name__ == "__main__":
    main()
