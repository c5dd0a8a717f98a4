"""An emulated Kubernetes API server for stockade's tests, sandbox and local runs.

It serves JSON over plain HTTP with enough of kube-apiserver's behaviour for the real
kopf controller, the real agents and real kubectl: server-set metadata, patches by
Content-Type, list and watch on a resourceVersion-ordered event log, selectors, the status
subresource, CRDs with printer columns as server-side Tables, discovery and OpenAPI v3.
See docs/emulator.md.
"""

from stockade_lab.emulator.faults import Fault, Faults
from stockade_lab.emulator.resources import PrinterColumn, ResourceDef
from stockade_lab.emulator.server import Emulator, EmulatorThread, WatchEvent, write_kubeconfig
from stockade_lab.emulator.status_errors import ApiError

__all__ = [
    "ApiError",
    "Emulator",
    "EmulatorThread",
    "Fault",
    "Faults",
    "PrinterColumn",
    "ResourceDef",
    "WatchEvent",
    "write_kubeconfig",
]
