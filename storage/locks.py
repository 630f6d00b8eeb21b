"""Every PostgreSQL advisory lock key the project uses, in one place, so that no two uses
can share one (tests/test_locks.py checks them).

One-bigint keys: the positive ones, and negative ones above -2**53, are Telegram ids:
storage.updates serialises each sender's updates on the user's (or, without a user, the
chat's) id. The project's own keys are ASCII tags, negated: far below any id.

Two-int4 keys (class, key) are a key space of their own in PostgreSQL (pg_locks tells them
apart by objsubid 2 against 1): the class names the use, the key is a row's id or hash.
"""

from __future__ import annotations

# One-bigint keys.
# "VBMIGR": two processes starting never both migrate. (It was -0x7662_6D69_6772 until
# 2026-12, inside the range of Telegram's ids; this change adds no migration, so an old and
# a new process starting together have nothing to migrate.)
MIGRATIONS = -0x5642_4D49_4752_0000
DIRECTORY_IMPORT = -0x5642_4449_4D50_0000  # "VBDIMP": two imports never interleave
STANDINGS_REFRESH = -0x5642_5354_4E44_0000  # "VBSTND": one standings refresh at a time
SCHEDULER = -0x5642_5343_4845_4400  # "VBSCHED": session-level, held by the scheduling process

# Classes of two-int4 keys.
PHOTO_SHA256 = 0x5648_0001  # storage.photos: one stored file per content hash
PHOTO_FILE_UNIQUE_ID = 0x5648_0002  # storage.photos: one download per Telegram file
SPOT_CHECK_DRAW = 0x5648_5343  # storage.spotchecks: one draw per supervisor and week
# The month tallies' triggers lock the officer with this class. Migration 0012 writes the
# number into its trigger functions (a migration does not import the code that changes
# after it): the test holds them equal.
MONTH_TALLY = 0x5648_5441
