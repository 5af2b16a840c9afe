"""``python -m engine`` is the ``gen3dface`` command."""
from .cli import entry

entry()
