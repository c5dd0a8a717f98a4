"""The sandbox: a whole cluster on one machine, in ``stk-*`` network namespaces.

See docs/sandbox.md. :class:`Sandbox` is the Python API; ``stockade sandbox`` the
command line; :mod:`stockade_lab.sandbox.supervisor` the background process that owns
the namespaces, the API server emulator, the controller, the agents and the
kubelet stand-in.
"""

from stockade_lab.sandbox.api import Converged, Sandbox, differences
from stockade_lab.sandbox.common import SandboxError

__all__ = ["Converged", "Sandbox", "SandboxError", "differences"]
