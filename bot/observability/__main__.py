"""`python -m bot.observability healthcheck`: the container's HEALTHCHECK (bot/observability/http.py)."""

import sys

from bot.observability.http import main

sys.exit(main())
