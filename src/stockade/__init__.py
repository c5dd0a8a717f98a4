"""stockade: Kubernetes NetworkPolicy enforcement with iptables and ipset."""

__version__ = "0.1.0"
