"""The fleet simulator: thousands of virtual DM devices from one machine, against any DM server.

What it is for: the figures of ``docs/benchmarks.md`` and the design's "behave as a fleet"
rule (``DESIGN.md`` rule 7) are taken with it, and it is how a DM server (ours or another)
is load-tested before a real fleet meets it: first contact after an outage, a Package #0
wave, a campaign across many devices.

Two steps, each its own command of ``omadm sim``:

* ``register`` (:mod:`.register`) creates the devices on an omadm server through the REST
  API's bulk endpoint and writes a *fleet file* (:mod:`.fleet`): every device's DevId and
  credentials, and the DM URL and ServerID the devices must use.
* ``run`` drives the fleet file's devices against the DM URL, many per asyncio process.

A fleet file written by hand works as well, so ``run`` can drive devices that some other
DM server already knows.

The modules: :mod:`.device` (one device: a compact record at rest, a real DM tree and
ClientSession in a session), :mod:`.scomo` (SCOMO in memory), :mod:`.run` (the scheduler,
HTTP, faults such as power cuts, the summary), :mod:`.download` (``--downloads real``: fetch,
resume, verify), :mod:`.notify` (Package #0: one UDP socket, a loopback address per device),
:mod:`.profile` and :mod:`.fleet` (the two input files), :mod:`.register` and :mod:`.cli`.
"""

from __future__ import annotations

from .fleet import Fleet, FleetDevice, FleetError, load_fleet, save_fleet

__all__ = ["Fleet", "FleetDevice", "FleetError", "load_fleet", "save_fleet"]
