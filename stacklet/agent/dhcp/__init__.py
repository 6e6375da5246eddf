"""The DHCP role: dnsmasq in a qdhcp- namespace for each network scheduled to this node."""
