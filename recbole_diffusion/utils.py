"""Errors that speak to the user, hyperparameter checks shared by every model, and atomic report writes."""

import difflib
import os


class RecBoleDiffusionError(ValueError):
    """A user-facing error: its message names the problem and the fix, on one line."""


class CheckpointError(RecBoleDiffusionError):
    """A checkpoint that is missing, corrupt, or not one of ours."""


class TrainingDivergedError(RecBoleDiffusionError):
    """The training loss became NaN or infinite."""


def did_you_mean(name, candidates):
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _bad(model, key, value, requirement):
    return RecBoleDiffusionError(
        f"Invalid hyperparameter {key}={value!r} for {model}: {requirement}. "
        f"Fix it with --{key}=<value> or in properties/model/{model}.yaml."
    )


def check_positive_int(config, model, *keys):
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(model, key, value, "must be a positive integer")


def check_probability(config, model, *keys, inclusive_one=True):
    for key in keys:
        value = config[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and 0 <= value and (value <= 1 if inclusive_one else value < 1)
        if not ok:
            raise _bad(model, key, value, "must be a number in [0, 1" + ("]" if inclusive_one else ")"))


def check_non_negative(config, model, *keys):
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _bad(model, key, value, "must be a non-negative number")


def check_choice(config, model, key, choices):
    value = config[key]
    if value not in choices:
        raise RecBoleDiffusionError(
            f"Invalid hyperparameter {key}={value!r} for {model}: must be one of {', '.join(map(str, choices))}."
            + did_you_mean(str(value), [str(c) for c in choices])
        )


def check_divisible(config, model, key, divisor_key):
    if config[key] % config[divisor_key] != 0:
        raise _bad(model, key, config[key], f"must be divisible by {divisor_key}={config[divisor_key]}")


def check_positive(config, model, *keys):
    """A number > 0 (a temperature, a scale)."""
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise _bad(model, key, value, "must be a number > 0")


def write_atomic(path, write):
    """``write(tmp_path)`` then rename: an interruption never leaves a half-written report."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def write_text(path, text, newline=None):
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
    write_atomic(path, write)
