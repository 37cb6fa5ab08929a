"""Mirror Exact Online into SQL tables: apply export runs (rows + deletions) exactly once (see docs/mirror.md)."""
