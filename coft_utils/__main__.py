"""``python -m coft_utils`` -- see :mod:`coft_utils.run`."""
import sys

from .run import main

sys.exit(main())
