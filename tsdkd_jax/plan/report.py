"""A memory plan's lines and totals, and its Markdown table (python -m tsdkd_jax.plan prints it)."""

from __future__ import annotations

import dataclasses
import math

HEADROOM = 0.9  # "fits" leaves 10 % of the device for XLA's workspace, fragmentation and the runtime


@dataclasses.dataclass
class Line:
    name: str
    phase: str  # "resident", "sampling (<who>)" or "train"
    bytes: int
    note: str = ""
    transient: bool = False  # a working set that exists one at a time (one block, one chunk)


@dataclasses.dataclass
class Plan:
    lines: list[Line]
    mesh: dict[str, int]
    device: str
    capacity: int  # bytes one device may use

    def total(self, phase: str) -> int:
        """Σ the phase's lasting lines + the largest of its transient ones."""
        lines = [line for line in self.lines if line.phase == phase]
        working = max((line.bytes for line in lines if line.transient), default=0)
        return sum(line.bytes for line in lines if not line.transient) + working

    @property
    def phases(self) -> list[str]:
        return list(dict.fromkeys(line.phase for line in self.lines if line.phase != "resident"))

    @property
    def peak(self) -> int:
        return self.total("resident") + max(self.total(phase) for phase in self.phases)

    @property
    def fits(self) -> bool:
        return self.peak <= HEADROOM * self.capacity


def _fmt(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def table(p: Plan) -> str:
    """A Markdown table of the plan, per device."""
    mesh = " × ".join(f"{k}={v}" for k, v in p.mesh.items())
    out = [f"per device, mesh {mesh} ({math.prod(p.mesh.values())} devices), device {p.device}", "",
           "| phase | what | bytes | note |", "| --- | --- | ---: | --- |"]  # fmt: skip
    for line in p.lines:
        name = f"{line.name} (transient)" if line.transient else line.name
        out.append(f"| {line.phase} | {name} | {_fmt(line.bytes)} | {line.note} |")
    out.append(f"| resident | **total** | {_fmt(p.total('resident'))} | all run |")
    for phase in p.phases:
        out.append(f"| {phase} | **total** | {_fmt(p.total(phase))} | lasting lines + largest transient |")
    verdict = "fits" if p.fits else "does NOT fit"
    out.append(f"| peak | **resident + largest phase** | **{_fmt(p.peak)}** | "
               f"{verdict} in {_fmt(p.capacity)} ({p.peak / p.capacity:.0%}) |")  # fmt: skip
    return "\n".join(out)
