"""The numbers behind the memory panel: ``core.memory``'s estimate for the settings, against this
machine's GPU — or, without one, against the 8 GB reference GPU the design targets, so a CPU-only
machine still tells you what will fit on the workstation you train on."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import StudioConfig
from core.memory import estimate_peak_memory, spill_warning
from core.memory.estimate import REFERENCE_GPU_BYTES


@dataclass
class PanelEstimate:
    parts: dict[str, int]          # bytes per part, in display order
    params: int
    device_name: str
    device_total: int              # bytes the estimate is compared with
    fits: bool
    on_this_machine: bool          # False: compared with the reference GPU, not a GPU found here
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def estimate_memory(cfg: StudioConfig) -> PanelEstimate:
    """Peak GPU memory of training ``cfg`` (bytes), with what to say about it."""
    est = estimate_peak_memory(cfg)
    notes = list(est.notes)
    warning = spill_warning(est)
    if warning:
        notes.append(warning)
    if est.device_total_bytes is None:
        return PanelEstimate(dict(est.parts), est.params, "an 8 GB reference GPU (no GPU here)",
                             REFERENCE_GPU_BYTES, est.total_bytes <= REFERENCE_GPU_BYTES, False,
                             notes)
    return PanelEstimate(dict(est.parts), est.params, est.device_name or "GPU",
                         est.device_total_bytes, bool(est.fits), True, notes)
