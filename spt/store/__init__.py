"""The SQLite store: tables, ids, opening/migrating, batched writes and import/merge."""

from spt.store.engine import Store, open_store
from spt.store.ids import canonical_json, content_id, file_hash, new_id, text_hash
from spt.store.writer import BatchWriter

__all__ = [
    "BatchWriter", "Store", "canonical_json", "content_id", "file_hash", "new_id", "open_store", "text_hash",
]
