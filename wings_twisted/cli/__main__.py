"""
``python -m wings_twisted.cli``: the ``wings`` command without the console
script (e.g. from a checkout).
"""

import sys

from .main import main

sys.exit(main())
