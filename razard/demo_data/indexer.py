"""broken-indexer (crown): dies at once, every time; nothing razard has can fix it."""

import sys

print("broken-indexer: error: index shard /srv/index/shard-7 is corrupt", file=sys.stderr)
sys.exit(4)
