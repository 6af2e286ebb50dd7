"""The server's registry of nodes: who is in the cluster, what each can do, whether it is healthy.

Other plugins find it by type and listen to its event:

    from pidaemon_plugins.registry import NODE_STATE, RegistryPlugin

    registry = node.lookup(RegistryPlugin)
    node.events.on(NODE_STATE, handler)      # handler(record=NodeRecord, old_state=str)

What nodes send is checked where it enters (`messages.py`, rules in `fields.py`
and `telemetry_summary.py`): a record's fields are always of their one type.
"""

from .plugin import NODE_STATE, RegistryPlugin
from .record import NodeRecord

__all__ = ["NODE_STATE", "NodeRecord", "RegistryPlugin"]
