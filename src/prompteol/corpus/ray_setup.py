"""Ray for the Ray executor: start or join it, check the pool's resources, find the user's error.

Ray for the Ray executor: joining or starting it, checking that the actor pool fits, an actor's peak
memory, and the user's error behind Ray's wrapping."""

from __future__ import annotations

import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigError, PrompteolError, require

if TYPE_CHECKING:  # pragma: no cover
    from .distributed import RayJob

__all__ = ["ray_module", "start_ray", "check_resources", "user_error", "max_rss_mib"]

log = logging.getLogger(__name__)


def ray_module():
    require("ray.data", "ray", "Encoding on Ray", package="ray[data]")
    import ray
    import ray.data

    return ray


def max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def start_ray(address: str | None, quiet: bool = True) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``), or start a local Ray with the machine's cores; reuse a
    running session. Returns whether this call started (and so should stop) it."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    level = logging.WARNING if quiet else logging.INFO
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=level, log_to_driver=True)
    return True


def user_error(exc: BaseException) -> PrompteolError | None:
    """The prompteol error (bad input, bad option) behind ``exc``: raised in the driver, or in a Ray
    task or actor (Ray wraps it; its ``cause`` is the original, with the original message)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, PrompteolError):
            return cause
        if isinstance(e, PrompteolError) and not type(e).__module__.startswith("ray"):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


def check_resources(ray, job: RayJob, strict: bool) -> None:
    """An actor pool that the cluster cannot place would wait forever: fail (one machine) or warn (a
    cluster, which may scale up)."""
    have = ray.cluster_resources()
    need = {"CPU": job.actors * job.cpus_per_actor, "GPU": job.actors * job.gpus_per_actor}
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return
    msg = (f"the actor pool needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs; Ray has "
           f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs")  # fmt: skip
    if strict:
        raise ConfigError(msg + ": lower --num-actors, --cpus-per-actor or --gpus-per-actor")
    log.warning("%s; the job waits until the cluster provides them", msg)
