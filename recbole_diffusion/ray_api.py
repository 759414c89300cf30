"""The few Ray Tune calls ``tune.py`` makes, on both Ray lines, chosen as one unit.

* Ray 2.6.3 (what RecBole 1.2.1's metadata pins): the AIR API, ``ray.air.session.report/get_checkpoint/
  get_trial_dir``, ``ray.air.Checkpoint``, ``ray.air.RunConfig/FailureConfig/CheckpointConfig``; its
  ``ray.tune.report`` is the older ``report(**metrics)`` of the function API.
* Current Ray (2.10 and later; ``ray.air.Checkpoint`` and the session are gone): ``ray.tune.report(metrics,
  checkpoint=...)``, ``ray.tune.get_checkpoint``, ``ray.tune.get_context().get_trial_dir()``,
  ``ray.tune.Checkpoint``, ``ray.tune.RunConfig/FailureConfig/CheckpointConfig``.

Mixing names across the two (the new ``Checkpoint`` with the old ``report``) fails at run time in a trial, so the
line is detected once, by the presence of the new API as a whole.
"""

import functools


@functools.lru_cache(maxsize=None)
def api():
    """The Ray Tune API of the installed Ray: a namespace of the calls ``tune.py`` uses."""
    from types import SimpleNamespace

    from ray import tune

    if all(hasattr(tune, name) for name in ("get_context", "get_checkpoint", "Checkpoint", "RunConfig")):
        return SimpleNamespace(
            line="current",
            report=lambda metrics, checkpoint=None: tune.report(metrics, checkpoint=checkpoint),
            get_checkpoint=tune.get_checkpoint,
            trial_dir=lambda: tune.get_context().get_trial_dir(),
            Checkpoint=tune.Checkpoint,
            RunConfig=tune.RunConfig,
            FailureConfig=tune.FailureConfig,
            CheckpointConfig=tune.CheckpointConfig,
        )
    from ray import air
    from ray.air import session

    return SimpleNamespace(
        line="air",
        report=lambda metrics, checkpoint=None: session.report(metrics, checkpoint=checkpoint),
        get_checkpoint=session.get_checkpoint,
        trial_dir=session.get_trial_dir,
        Checkpoint=air.Checkpoint,
        RunConfig=air.RunConfig,
        FailureConfig=air.FailureConfig,
        CheckpointConfig=air.CheckpointConfig,
    )
