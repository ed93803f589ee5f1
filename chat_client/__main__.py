"""`python -m chat_client SERVER ROOM --user NAME`."""

import sys

from .cli import main

sys.exit(main())
