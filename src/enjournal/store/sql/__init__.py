"""What the SQL backends share: index rows (``rows``), the search planner (``search``) and the
Repository and unit of work over a DB-API-like connection (``repository``). ``sqlite/`` and
``postgres/`` add the connection handling, schema and locking of their engine."""
