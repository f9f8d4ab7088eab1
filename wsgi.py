"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`.

A wrong setting stops the process here with one line on standard error naming the setting,
never a traceback: exit status 2 (a usage error, as click reports them), or 4 under gunicorn,
whose master stops on that status ("App failed to load") instead of restarting workers that
can never start.
"""

import gc
import sys

from config import ConfigError
from mailer import create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"mailer: configuration error: {exc}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(4 if "gunicorn" in sys.modules else 2) from None

# Everything built so far (the app, its mappers, schemas and compiled statements) lives as long
# as the process: frozen, it is out of the garbage collector's way, and a full collection
# scans only what requests leave behind. Unfrozen, each full collection took 100-150 ms under
# load, a pause every few seconds that stalled the request in hand (bench/README.md).
gc.freeze()
