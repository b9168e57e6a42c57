"""The summary care record (kjernejournal): critical information, the citizen's own entries,
the donor card and ``Patient/$summary`` (docs/summary.md)."""
