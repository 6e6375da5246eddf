"""Open vSwitch processes run by stacklet (a private ovsdb-server + ovs-vswitchd)."""

from stacklet.ovs.daemons import OvsDaemons, OvsError, db_answers, system_ovs_running

__all__ = ["OvsDaemons", "OvsError", "db_answers", "system_ovs_running"]
