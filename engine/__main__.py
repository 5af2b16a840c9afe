"""``python -m engine`` is the ``gen3dface`` command."""
import sys

from .cli import main

sys.exit(main())
