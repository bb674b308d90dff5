"""Run one expert call under a time limit and an output size limit; failures come back as messages.

The call runs in a worker thread; when it passes ``time_limit_s`` the conversation goes on with an error message
(Python cannot stop a running thread: the abandoned call finishes in the background and its result is dropped;
experts run inference only, so nothing half-written is kept).
"""
from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass
from pathlib import Path

from medvl.data.volume import Volume
from medvl.experts.expert import Expert, ExpertResult, anonymous_volume

__all__ = ["ExpertFailure", "ExpertLimits", "run_with_limits"]

log = logging.getLogger(__name__)


class ExpertFailure(RuntimeError):
    """An expert call raised, ran past its time limit or returned too much; the message says which."""


@dataclass(frozen=True)
class ExpertLimits:
    """Limits of one expert call.

    Attributes:
        time_limit_s: wall-clock seconds.
        max_text_chars: longest result text.
        max_overlay_bytes: largest overlay PNG.
    """

    time_limit_s: float = 120.0
    max_text_chars: int = 2000
    max_overlay_bytes: int = 5_000_000

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if self.max_text_chars < 1 or self.max_overlay_bytes < 1:
            raise ValueError("max_text_chars and max_overlay_bytes must be >= 1")


def run_with_limits(expert: Expert, volume: Volume, argument: str | None, output_dir: Path,
                    limits: ExpertLimits) -> ExpertResult:
    """``expert.run`` on the volume's voxels and geometry (never its meta), within ``limits``.

    Raises:
        ExpertFailure: the expert raised (its message is kept, the traceback goes to the debug log), ran past
            the time limit, returned something that is not an ``ExpertResult``, or an output over the limits.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"expert-{expert.name}")
    future = pool.submit(expert.run, anonymous_volume(volume), argument, output_dir)
    try:
        result = future.result(timeout=limits.time_limit_s)
    except concurrent.futures.TimeoutError:
        raise ExpertFailure(f"the expert {expert.name} ran past its time limit of {limits.time_limit_s:g} s") from None
    except Exception as error:  # noqa: BLE001 - any failure of an expert is reported back, not raised
        log.debug("expert %s raised", expert.name, exc_info=True)
        raise ExpertFailure(f"the expert {expert.name} failed: {type(error).__name__}: {error}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if not isinstance(result, ExpertResult):
        raise ExpertFailure(f"the expert {expert.name} returned {type(result).__name__}, not an ExpertResult")
    if len(result.text) > limits.max_text_chars:
        raise ExpertFailure(f"the expert {expert.name} returned {len(result.text)} characters, over the limit of "
                            f"{limits.max_text_chars}")
    if result.overlay is not None:
        overlay = Path(result.overlay)
        if not overlay.is_file():
            raise ExpertFailure(f"the expert {expert.name} named an overlay that it did not write")
        if overlay.stat().st_size > limits.max_overlay_bytes:
            raise ExpertFailure(f"the expert {expert.name}'s overlay is {overlay.stat().st_size} bytes, over the "
                                f"limit of {limits.max_overlay_bytes}")
    return result
