"""OpenMP wait policy of torch's CPU thread pool, set before torch loads (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import MutableMapping

OPENMP_SPIN_COUNT = "1000"


def default_openmp_wait(environ: MutableMapping[str, str]) -> None:
    """Bound how long torch's OpenMP threads spin before they sleep: ``GOMP_SPINCOUNT=1000`` (libgomp, the OpenMP
    of torch's Linux wheels), unless the environment sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` itself.

    Measured on 2 cores (benchmarks/training_throughput.py, steps per second of the cpu-preset loops): libgomp's
    default spinning is fastest when the machine is idle but 2-3x slower than sleeping when one other job shares the
    cores; ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) is best when busy but costs 15-45% when idle; a 1,000-spin
    bound keeps the idle speed and most of the busy speed. Read when torch loads, which is after this module in a
    ``kedro run``.
    """
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
