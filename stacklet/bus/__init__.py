"""Change events: the server tells node agents "something changed, look again".

``events.ChangeNotifier`` holds an epoch (random per server process) and a sequence number per
host; ``events.install`` hooks a sessionmaker so every commit that changed networking rows bumps
them, without any service having to remember to publish.

``requests.AgentRequests`` carries the other direction's questions: a request for one host's
agent rides that host's long poll, and the agent posts its answer back.
"""

from stacklet.bus.events import ChangeNotifier, install
from stacklet.bus.requests import AgentFailed, AgentRequests, AgentUnanswered

__all__ = ["AgentFailed", "AgentRequests", "AgentUnanswered", "ChangeNotifier", "install"]
