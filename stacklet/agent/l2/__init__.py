"""The Open vSwitch role: bridges, patch and tunnel ports, VIF wiring, flows, security groups."""
