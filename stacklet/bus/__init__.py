"""Change events: the server tells node agents "something changed, look again".

``events.install`` hooks a sessionmaker so every commit that changed networking rows moves the
revisions of the hosts it concerns (``targets.py``; kept in the database, ``revisions.py``) and
publishes to them, without any service having to remember to; ``events.ChangeNotifier`` wakes
this process's long polls, ``rabbit.RabbitNotifier`` also the agents' queues (per host, per
role, all).

``requests.AgentRequests`` carries the other direction's questions: a request for one host's
agent rides that host's long poll, and the agent posts its answer back.
"""

from stacklet.bus.events import ChangeNotifier, install
from stacklet.bus.requests import AgentFailed, AgentRequests, AgentUnanswered

__all__ = ["AgentFailed", "AgentRequests", "AgentUnanswered", "ChangeNotifier", "install"]
