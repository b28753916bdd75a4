"""Where independent work units run: in this process (the default) or as Ray tasks on a cluster.

A work unit is a plain function of picklable arguments that writes its result into the content-addressed store
(an image shard, a model's fold) and returns something small. Because every unit is keyed by its content and
written atomically, it does not matter which machine ran it or whether it ran twice (a retried Ray task): the
store holds the same bytes, and the driver then reads them exactly as a local run would.

``mmstack run CONFIG --ray [ADDRESS]`` wraps the run in :func:`use` with a :class:`RayExecutor`; code that has
independent units calls ``current().map(fn, items, shared)``. Ray is an optional dependency (``pip install
.[ray]``); nothing imports it unless a Ray run is asked for.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Callable, Iterator, Sequence

from .errors import ConfigError

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs the units one after another in this process."""

    distributed = False

    def map(self, fn: Callable, items: Sequence[Any], shared: tuple = ()) -> list[Any]:
        """``[fn(*shared, item) for item in items]``."""
        return [fn(*shared, item) for item in items]


class RayExecutor:
    """Runs the units as Ray tasks (``num_cpus`` each), retried by Ray when a worker dies.

    ``shared`` arguments (a model matrix, the image sources) are put in Ray's object store once and passed by
    reference to every task. The cluster is joined at ``address`` (``"auto"``: the one this machine belongs to;
    None: start a local one); the store's folder must be the same path on every node (a shared filesystem).
    """

    distributed = True

    def __init__(self, address: str | None = "auto", num_cpus: float = 1, max_retries: int = 3):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'mmstack[ray]'") from None
        self.ray = ray
        self.num_cpus, self.max_retries = num_cpus, max_retries
        if not ray.is_initialized():
            # the driver's modules (mmstack from this checkout) must import on the workers too
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        log.info("ray: %s CPUs in the cluster", ray.cluster_resources().get("CPU", 0))

    def map(self, fn: Callable, items: Sequence[Any], shared: tuple = ()) -> list[Any]:
        if not items:
            return []
        remote = self.ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries,
                                 retry_exceptions=False)(fn)
        refs = [self.ray.put(s) for s in shared]
        return self.ray.get([remote.remote(*refs, item) for item in items])


_CURRENT: contextvars.ContextVar = contextvars.ContextVar("mmstack_executor", default=LocalExecutor())


def current() -> LocalExecutor | RayExecutor:
    """The executor independent units run on (local unless inside :func:`use`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use(executor) -> Iterator[None]:
    """Run the units inside the block on ``executor``."""
    token = _CURRENT.set(executor)
    try:
        yield
    finally:
        _CURRENT.reset(token)
