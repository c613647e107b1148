"""Data: the HarmOR paired safety set, built-in tasks, poison data, import/export of datasets.

Heavy libraries (`datasets`, `pandas`) are imported inside the functions that need them.
"""

from spt.data.harmor import build_harmor, category_summary, ensure_harmor, harmor_source
from spt.data.io import check_out_path, export_items, import_dataset, read_rows, rows_to_items
from spt.data.items import item_id, load_items, resolve_dataset, store_items
from spt.data.poison import BUILTIN_POISON, ensure_poison_dataset, harmor_comply_items, mix_poison
from spt.data.tasks import BUILTIN_TASKS, Task, ensure_task_dataset, get_task
from spt.data.templates import load_all as load_templates

__all__ = [
    "BUILTIN_POISON", "BUILTIN_TASKS", "Task", "build_harmor", "category_summary", "check_out_path",
    "ensure_harmor", "ensure_poison_dataset", "ensure_task_dataset", "export_items", "get_task",
    "harmor_comply_items", "harmor_source", "import_dataset", "item_id", "load_items", "load_templates",
    "mix_poison", "read_rows", "resolve_dataset", "rows_to_items", "store_items",
]
