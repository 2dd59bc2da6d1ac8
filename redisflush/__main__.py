"""`python -m redisflush`: the same as the `redisflush` command."""
import sys

from .cli import main

sys.exit(main())
