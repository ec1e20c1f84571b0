"""``python -m coft_utils`` -- see :mod:`coft_utils.book.run`."""
import sys

from .book.run import main

sys.exit(main())
