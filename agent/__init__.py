"""stockade.agent: the node agent (rule sets into iptables chains and ipsets)."""
