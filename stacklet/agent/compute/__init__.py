"""The compute role: instances placed on this node, made real by a driver (``driver.py``):
``netns`` (an instance is a network namespace with a small init) or ``qemu`` (a real VM)."""
