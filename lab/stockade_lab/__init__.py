"""stockade's lab: test equipment, never part of the product.

- :mod:`stockade_lab.emulator`: an emulated Kubernetes API server (HTTP, watches).
- :mod:`stockade_lab.sandbox`: a cluster on one machine (``stockade sandbox``).
- :mod:`stockade_lab.netlab`: nodes, pods and hosts as network namespaces.
- :mod:`stockade_lab.reference`: a plain evaluator of the specifications, the oracle
  the engine's property tests are held to.
- :mod:`stockade_lab.processes`: process records that survive pid reuse.
"""
