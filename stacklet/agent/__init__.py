"""The node agent: level-triggered roles that turn the server's desired state into the node's."""
