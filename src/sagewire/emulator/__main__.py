"""``python -m sagewire.emulator --config FILE --port N``."""

import sys

from sagewire.emulator.server import main

sys.exit(main())
