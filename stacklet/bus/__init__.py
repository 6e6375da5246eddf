"""Change events: the server tells node agents "something changed, look again".

``events.ChangeNotifier`` holds an epoch (random per server process) and a sequence number per
host; ``events.install`` hooks a sessionmaker so every commit that changed networking rows bumps
them, without any service having to remember to publish.
"""

from stacklet.bus.events import ChangeNotifier, install

__all__ = ["ChangeNotifier", "install"]
