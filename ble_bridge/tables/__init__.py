"""Tables people open, find and join at runtime (issue 15).

``genesis``: what fixes a table's id; ``directory``: signed announcements and the bounded
list of tables a node heard (sans-IO); ``registry``: the tables this node opened or joined,
kept in ``<data_dir>/tables.json``; ``play``: the node's part in each roll (commit and
reveal); ``service``: the thin asyncio service a node runs.
"""
